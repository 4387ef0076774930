"""Exercises for notebook 02 (soft targets and temperature)."""
from __future__ import annotations

import math
import numbers

import torch

from .core import Exercise, Wrong, as_tensor, close, diagnose, mismatch


def _logit_cases():
    g = torch.Generator().manual_seed(2)
    return [
        (torch.randn(3, 5, generator=g) * 3, 1.0),
        (torch.randn(3, 5, generator=g) * 3, 2.0),
        (torch.randn(4, 3, generator=g) * 3, 5.0),
        (torch.randn(2, 4, generator=g) * 3, 0.5),
        (torch.randn(2, 3, 4, generator=g) * 3, 3.0),
        (torch.randn(6, generator=g) * 3, 4.0),
    ]


def _check_softmax(call):
    cases = _logit_cases()
    got = []
    for logits, T in cases:
        out = as_tensor(call(logits.clone(), T), logits.shape, "softmax_with_temperature")
        got.append(out)
    big = torch.tensor([[1000.0, 999.0, 0.0], [-1000.0, 0.0, 1000.0]])
    out_big = {T: as_tensor(call(big.clone(), T), big.shape, "softmax_with_temperature") for T in (1.0, 2.0, 0.5)}
    if not torch.isfinite(out_big[1.0]).all():
        raise Wrong("your function returns nan/inf for large logits (e.g. 1000): subtract the "
                    "largest logit before exp, or use torch.softmax, which does it for you")
    if not all(torch.isfinite(out).all() for out in out_big.values()):
        raise Wrong("your function returns nan/inf for large logits at T = 2 or T = 0.5 (fine at T = 1): subtract "
                    "the largest of z / T, not of z, before exp (or use torch.softmax on z / T)")
    expected = [torch.softmax(z / T, dim=-1) for z, T in cases]
    if all(close(g, e) for g, e in zip(got, expected)) and all(close(out, torch.softmax(big / T, -1))
                                                               for T, out in out_big.items()):
        return
    message = diagnose(got, {
        "the temperature has no effect in your function: divide the logits by T before the softmax":
            lambda: [torch.softmax(z, -1) for z, T in cases],
        "you multiplied the logits by T: divide them by T (T > 1 must make the distribution flatter)":
            lambda: [torch.softmax(z * T, -1) for z, T in cases],
        "you divided the probabilities by T after the softmax: divide the logits before it "
        "(your 'probabilities' no longer sum to 1)":
            lambda: [torch.softmax(z, -1) / T for z, T in cases],
        "you returned log-probabilities: return softmax(z / T), not log_softmax":
            lambda: [torch.log_softmax(z / T, -1) for z, T in cases],
        "your softmax runs over the wrong dimension: classes are the last dimension (dim=-1)":
            lambda: [torch.softmax(z / T, 0) for z, T in cases],
    })
    if message:
        raise Wrong(message)
    for g, (z, T) in zip(got, cases):
        if not close(g.sum(-1), torch.ones(z.shape[:-1])):
            raise Wrong("your probabilities do not sum to 1 over the classes (the last dimension)")
    cases += [(big, T) for T in out_big]  # an answer right on the ordinary rows differs on these (a clamp)
    got, expected = got + list(out_big.values()), expected + [torch.softmax(big / T, -1) for T in out_big]
    i = mismatch(got, expected)  # quote an input where the answer differs, not one where it agrees
    z, row, want = _first_row_that_differs(cases[i][0], got[i], expected[i])
    wrong = [k for k in range(len(row)) if not close(row[k], want[k])] or list(range(len(row)))  # not a rounding edge
    digits = next((d for d in range(3, 8) if _rounded(row[wrong], d) != _rounded(want[wrong], d)), 8)  # a near miss
    raise Wrong(f"your probabilities differ from softmax(z / T): for z = {_rounded(z)} and T = {cases[i][1]:g} you "
                f"returned {_rounded(row, digits)}, expected {_rounded(want, digits)}")


def _rounded(values: torch.Tensor, digits: int = 3) -> list[float]:
    """A short row for a message: its values to ``digits`` decimals."""
    return [round(float(v), digits) for v in values.reshape(-1)]


def _first_row_that_differs(logits: torch.Tensor, got: torch.Tensor, expected: torch.Tensor):
    """``(logits row, got row, expected row)`` for the first row (last dimension) where the learner is wrong."""
    rows, wanted = got.reshape(-1, got.shape[-1]), expected.reshape(-1, got.shape[-1])
    k = next((k for k in range(len(rows)) if not close(rows[k], wanted[k])), 0)
    return logits.reshape(-1, logits.shape[-1])[k], rows[k], wanted[k]


def _prob_cases():
    g = torch.Generator().manual_seed(3)
    return [
        torch.softmax(torch.randn(4, 5, generator=g) * 2, -1),
        torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]),
        torch.full((8,), 1 / 8),
        torch.softmax(torch.randn(2, 3, 6, generator=g), -1),
    ]


def _entropy_ref(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


def _check_entropy(call):
    cases = _prob_cases()
    got = []
    for p in cases:
        out = call(p.clone())
        if isinstance(out, numbers.Real) and not isinstance(out, bool):
            out = torch.tensor(float(out))  # a scalar for a 1-D input is fine
        out = as_tensor(out, None, "entropy")
        if tuple(out.shape) != tuple(p.shape[:-1]):
            raise Wrong(f"entropy should be computed per row, over the last dimension: for probabilities "
                        f"of shape {tuple(p.shape)} expected shape {tuple(p.shape[:-1])}, got {tuple(out.shape)}")
        got.append(out)
    if not torch.isfinite(got[1]).all():
        raise Wrong("your entropy is nan when a probability is 0: 0 * log(0) counts as 0 "
                    "(use torch.special.xlogy(p, p), or mask the zeros)")
    expected = [_entropy_ref(p) for p in cases]
    if all(close(g, e) for g, e in zip(got, expected)):
        return
    message = diagnose(got, {
        "your entropy is negative: H(p) = -sum p log p (you forgot the minus sign)":
            lambda: [-e for e in expected],
        "your entropy is in bits (log2): use the natural log (nats), like the KL losses":
            lambda: [e / math.log(2) for e in expected],
        "your entropy is in base-10 logs (log10): use the natural log (nats), torch.log, like the KL losses":
            lambda: [e / math.log(10) for e in expected],
        "you averaged over the classes instead of summing: H(p) = -sum_c p_c log p_c":
            lambda: [e / p.shape[-1] for e, p in zip(expected, cases)],
    })
    if message:
        raise Wrong(message)
    i = mismatch(got, expected)  # quote a distribution where the answer differs, not one where it agrees
    if i == 2:
        raise Wrong(f"your entropy of the uniform distribution over 8 classes is {float(got[2]):.4f}, "
                    f"expected log(8) = {math.log(8):.4f}")
    p, value, want = _first_entropy_that_differs(cases[i], got[i], expected[i])
    raise Wrong(f"for the distribution p = {_rounded(p)} your entropy is {value:.4f}, expected "
                f"-sum p log p = {want:.4f}")


def _first_entropy_that_differs(probs: torch.Tensor, got: torch.Tensor, expected: torch.Tensor):
    """``(distribution, got, expected)`` for the first row of ``probs`` whose entropy the learner got wrong."""
    rows, values, wanted = probs.reshape(-1, probs.shape[-1]), got.reshape(-1), expected.reshape(-1)
    k = next((k for k in range(len(values)) if not close(values[k], wanted[k])), 0)
    return rows[k], float(values[k]), float(wanted[k])


q1 = Exercise(
    "ex02.q1", "Softmax with temperature", "softmax_with_temperature", _check_softmax,
    hints=(
        'A temperature T rescales the logits before they become probabilities: T > 1 flattens the '
        'distribution, T < 1 sharpens it, T = 1 is the ordinary softmax. Each row must still sum to 1.',
        'Divide the logits by the temperature, then torch.softmax(x, dim=-1): it normalises over the classes '
        '(last dimension) and is numerically stable for large logits, unlike a hand-written exp / sum.',
        'One line: the softmax, over dim=-1, of logits divided (not multiplied) by temperature; return the '
        'tensor of probabilities (not log-probabilities, not a list).',
    ),
    solution='''
def softmax_with_temperature(logits, temperature=1.0):
    """softmax(logits / T) over the last dimension."""
    ### BEGIN SOLUTION
    return torch.softmax(logits / temperature, dim=-1)
    ### END SOLUTION
''',
    success="Correct! Higher T flattens the distribution and reveals the teacher's 'dark knowledge'.",
)

q2 = Exercise(
    "ex02.q2", "Entropy of soft targets", "entropy", _check_entropy,
    hints=(
        'Entropy measures how spread out a distribution is: 0 for a one-hot vector, log(C) for the uniform '
        'distribution over C classes. It is one number per distribution, in nats (natural logarithm).',
        'torch.special.xlogy(p, p) computes p * log(p) and gives 0 where p is 0 (0 * log 0 = 0 by convention,'
        ' while p * p.log() gives nan there); .sum(dim=-1) adds over the classes.',
        'Negate the sum over the last dimension of xlogy(probs, probs): keep the minus sign, sum (do not '
        'average) over the classes, and do not reduce over the rows.',
    ),
    solution='''
def entropy(probs):
    """Entropy in nats of each distribution along the last dimension."""
    ### BEGIN SOLUTION
    return -torch.special.xlogy(probs, probs).sum(dim=-1)
    ### END SOLUTION
''',
    success="Correct! Entropy grows with the temperature: softer targets give the wrong classes' ranking more weight "
            "in the loss, until, at the uniform distribution (entropy log C), they say nothing about the classes.",
)

__all__ = ["q1", "q2"]
