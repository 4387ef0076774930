"""Exercises for notebook 03 (knowledge-distillation losses).

The reference is :mod:`kd_tutorial.losses`; the diagnoses compare the
learner's values with known-wrong variants computed on the same inputs.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .. import losses as ref
from .core import Exercise, LearnerCrash, Wrong, as_float, close, diagnose, student_gradient


def _cases():
    g = torch.Generator().manual_seed(4)
    shapes = [(3, 4, 2.0), (5, 3, 3.0), (2, 6, 1.0), (4, 2, 5.0)]
    return [(torch.randn(B, C, generator=g) * 2, torch.randn(B, C, generator=g) * 3, T)
            for B, C, T in shapes]


def _kl(log_q_input, target, reduction="batchmean"):
    with warnings.catch_warnings():  # reduction="mean" warns: that is the learner's bug we reproduce
        warnings.simplefilter("ignore")
        return F.kl_div(log_q_input, target, reduction=reduction)


def _soft_variants(cases):
    ls, sm = F.log_softmax, F.softmax
    B, C = cases[0][0].shape
    V = lambda f: (lambda: [f(s, t, T) for s, t, T in cases])  # noqa: E731
    return {
        f"your loss is {C}x too small: did you use reduction='mean'? It divides by batch size x "
        f"number of classes; use reduction='batchmean'":
            V(lambda s, t, T: _kl(ls(s / T, -1), sm(t / T, -1), "mean") * T * T),
        f"your loss is {B}x too large: reduction='sum' adds over the batch; use reduction='batchmean'":
            V(lambda s, t, T: _kl(ls(s / T, -1), sm(t / T, -1), "sum") * T * T),
        "your loss is T^2 too small: multiply the KL by temperature ** 2, so the soft term's "
        "gradients keep their size when T changes":
            V(lambda s, t, T: _kl(ls(s / T, -1), sm(t / T, -1))),
        "you multiplied by T; the factor is T^2 (temperature ** 2)":
            V(lambda s, t, T: _kl(ls(s / T, -1), sm(t / T, -1)) * T),
        "F.kl_div expects log-probabilities as its first argument: use log_softmax(student_logits / T), "
        "not softmax":
            V(lambda s, t, T: _kl(sm(s / T, -1), sm(t / T, -1)) * T * T),
        "F.kl_div expects log-probabilities as its first argument, you passed raw logits: "
        "use log_softmax(student_logits / T)":
            V(lambda s, t, T: _kl(s / T, sm(t / T, -1)) * T * T),
        "you computed KL(student || teacher): the teacher's probabilities are the target "
        "(second argument of F.kl_div), the student's log-probabilities the input":
            V(lambda s, t, T: _kl(ls(t / T, -1), sm(s / T, -1)) * T * T),
        "divide the student's logits by T too: both distributions are softened":
            V(lambda s, t, T: _kl(ls(s, -1), sm(t / T, -1)) * T * T),
        "divide the teacher's logits by T too: both distributions are softened":
            V(lambda s, t, T: _kl(ls(s / T, -1), sm(t, -1)) * T * T),
        "the temperature has no effect in your loss: divide both logits by T, then scale by T^2":
            V(lambda s, t, T: _kl(ls(s, -1), sm(t, -1))),
        "this is the soft cross-entropy, which exceeds the KL by T^2 x the teacher's entropy: "
        "same gradients, but the exercise asks for the KL (F.kl_div)":
            V(lambda s, t, T: ref.soft_cross_entropy(s, t, T)),
        "this is the seed article's loss, F.cross_entropy(student_logits, softmax(teacher_logits)): "
        "no temperature, no T^2 and a cross-entropy rather than a KL":
            V(lambda s, t, T: F.cross_entropy(s, sm(t, -1))),
    }


def _check_soft(call):
    cases = _cases()
    got = []
    for s, t, T in cases:
        got.append(as_float(call(s.clone(), t.clone(), T), "soft_kd_loss"))
    expected = [float(ref.kl_divergence(s, t, T)) for s, t, T in cases]
    if not all(close(g, e) for g, e in zip(got, expected)):
        message = diagnose(got, _soft_variants(cases))
        s, t, T = cases[0]
        raise Wrong(message or f"your loss is {got[0]:.4f} for a batch where T^2 * KL (batchmean) is "
                    f"{expected[0]:.4f} (B={s.shape[0]}, C={s.shape[1]}, T={T})")
    # gradients: must reach the student, never the teacher
    student_gradient(call, *cases[1], student_name="student_logits", teacher_name="teacher_logits")


def _label_cases():
    g = torch.Generator().manual_seed(5)
    out = []
    for B, C, T, alpha, labels in [
        (4, 3, 2.0, 0.5, [0, 2, 1, 1]),
        (5, 2, 4.0, 0.9, [1, -1, 0, -1, 1]),
        (3, 4, 1.0, 0.3, [3, 0, -1]),
        (6, 2, 3.0, 0.7, [0, 1, 1, 0, 1, 0]),
    ]:
        out.append((torch.randn(B, C, generator=g) * 2, torch.randn(B, C, generator=g) * 3,
                    torch.tensor(labels), T, alpha))
    return out


def _ce_lab(s, y):
    """The cross-entropy averaged over the labelled rows only (the usual ignore_index mean)."""
    m = y != -1
    return F.cross_entropy(s[m], y[m]) if bool(m.any()) else s.sum() * 0


def _ce(s, y):
    """The course's hard term: the cross-entropy summed over labelled rows, divided by all B rows."""
    return ref.hard_cross_entropy(s, y)


def _check_full(call):
    cases = _label_cases()
    got = []
    for i, (s, t, y, T, a) in enumerate(cases):
        try:
            got.append(as_float(call(s.clone(), t.clone(), y.clone(), T, a), "kd_loss"))
        except LearnerCrash as crash:
            if bool((y == -1).any()):
                raise Wrong(f"your loss fails on a batch with unlabelled rows (label -1): {crash}. "
                            "Unlabelled rows add 0 to the hard term, e.g. "
                            "F.cross_entropy(..., ignore_index=-1, reduction='sum') / batch size") from None
            raise
    expected = [float(ref.distillation_loss(s, t, y, T, a)) for s, t, y, T, a in cases]
    if not all(close(g, e) for g, e in zip(got, expected)):
        kl = ref.kl_divergence
        V = lambda f: (lambda: [f(s, t, y, T, a) for s, t, y, T, a in cases])  # noqa: E731
        message = diagnose(got, {
            "alpha weights the soft (teacher) term: use alpha * soft + (1 - alpha) * hard":
                V(lambda s, t, y, T, a: (1 - a) * kl(s, t, T) + a * _ce(s, y)),
            "the hard-label cross-entropy must use the student's logits at T = 1, not divided by T":
                V(lambda s, t, y, T, a: a * kl(s, t, T) + (1 - a) * _ce(s / T, y)),
            "your soft term is missing its T^2 factor":
                V(lambda s, t, y, T, a: a * kl(s, t, T) / (T * T) + (1 - a) * _ce(s, y)),
            "you averaged the hard term over the labelled rows only: then a labelled review weighs more when "
            "the batch holds fewer of them. Divide the sum over labelled rows by the whole batch size, so every "
            "review weighs 1/B":
                V(lambda s, t, y, T, a: a * kl(s, t, T) + (1 - a) * _ce_lab(s, y)),
            "your loss has no hard-label term: add (1 - alpha) * cross-entropy with the labels":
                V(lambda s, t, y, T, a: a * kl(s, t, T)),
            "this is the seed article's loss, F.cross_entropy(student_logits, softmax(teacher_logits)): "
            "no temperature, no T^2, no hard-label term":
                V(lambda s, t, y, T, a: F.cross_entropy(s, F.softmax(t, -1))),
        })
        raise Wrong(message or "your loss differs from alpha * T^2 * KL + (1 - alpha) * CE "
                    f"(got {got[0]:.4f}, expected {expected[0]:.4f} on the first batch)")
    # a batch of unlabelled transfer reviews only: the hard term must vanish
    s, t, _, T, a = cases[0]
    y = torch.full((s.shape[0],), -1)
    try:
        value = as_float(call(s.clone(), t.clone(), y, T, a), "kd_loss")
    except LearnerCrash as crash:
        raise Wrong(f"your loss fails on a batch of unlabelled reviews only (all labels -1): {crash}. "
                    "The hard term is 0 there") from None
    if not close(value, float(ref.distillation_loss(s, t, y, T, a))):
        raise Wrong("on a batch of unlabelled reviews only (all labels -1) the hard term must be 0 "
                    f"(a mean over no labelled row is nan), got {value:.4f}")


q1 = Exercise(
    "ex03.q1", "Hinton's soft loss with T^2 and batchmean", "soft_kd_loss", _check_soft,
    hint="""F.kl_div(input, target) wants input = student log-probabilities
    (log_softmax(student_logits / T)) and target = teacher probabilities (softmax(teacher_logits / T)).
    Use reduction='batchmean', multiply by T**2, and detach the teacher's logits.""",
    solution='''
def soft_kd_loss(student_logits, teacher_logits, temperature):
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the batch."""
    ### BEGIN SOLUTION
    T = temperature
    log_q = F.log_softmax(student_logits / T, dim=-1)
    p = F.softmax(teacher_logits.detach() / T, dim=-1)
    return F.kl_div(log_q, p, reduction="batchmean") * T ** 2
    ### END SOLUTION
''',
    success="Correct! T^2 * KL with batchmean: the soft term keeps its scale whatever T and the number of classes.",
)

q2 = Exercise(
    "ex03.q2", "The full distillation loss", "kd_loss", _check_full,
    hint="""alpha * soft_kd_loss(...) + (1 - alpha) * hard, where hard is the cross-entropy at T = 1 summed over
    the labelled rows and divided by the batch size B (every review weighs 1/B, an unlabelled one adds 0):
    F.cross_entropy(student_logits, labels, ignore_index=-1, reduction="sum") / len(labels).""",
    solution='''
def kd_loss(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    """alpha * T^2 * KL + (1 - alpha) * CE, both averaged over the B rows (label -1 = unlabelled: CE adds 0)."""
    ### BEGIN SOLUTION
    soft = soft_kd_loss(student_logits, teacher_logits, temperature)
    hard = F.cross_entropy(student_logits, labels, ignore_index=-1, reduction="sum") / len(labels)
    return alpha * soft + (1 - alpha) * hard
    ### END SOLUTION
''',
    success="Correct! Unlabelled transfer reviews feed the soft term only, and every review weighs 1/B.",
)

__all__ = ["q1", "q2"]
