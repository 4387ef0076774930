"""Exercises for notebook 09 (distilling generative language models): the token-level KD loss, shifted and
masked; and the reverse KL.

The references are :func:`kd_tutorial.losses.token_kl` and :func:`kd_tutorial.losses.reverse_token_kl`.
The checks use padded batches whose prompts differ in length from row to row; at padded positions the
logits are large garbage (nothing trains a model there), so a loss that lets them in is far off, and a
``0 * log 0`` computed there turns into nan.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import losses as ref
from .core import Exercise, Wrong, as_float, close, diagnose, mismatch, student_gradient

# (batch, length, vocabulary, temperature, prompt tokens per row, real tokens per row)
CASES = [
    (3, 7, 6, 2.0, [2, 3, 1], [7, 5, 4]),
    (2, 6, 5, 1.0, [1, 3], [6, 4]),
    (4, 5, 7, 3.0, [2, 1, 2, 3], [5, 5, 3, 4]),
]


def _lm_cases():
    """[(student logits, teacher logits, attention_mask, loss_mask, T)] over whole sequences, not yet shifted."""
    g = torch.Generator().manual_seed(9)
    out = []
    for B, L, V, T, prompts, lengths in CASES:
        positions = torch.arange(L)[None]
        attention = (positions < torch.tensor(lengths)[:, None]).long()
        loss_mask = attention * (positions >= torch.tensor(prompts)[:, None]).long()
        pad = (attention == 0)[..., None]
        s = torch.where(pad, torch.randn(B, L, V, generator=g) * 300, torch.randn(B, L, V, generator=g) * 2)
        t = torch.where(pad, torch.randn(B, L, V, generator=g) * 300, torch.randn(B, L, V, generator=g) * 3)
        out.append((s, t, attention, loss_mask, T))
    return out


def _per_token(s, t, T, reverse=False):
    """KL per position at temperature T (no T^2), (B, L): forward KL(p || q), or reverse KL(q || p)."""
    log_q, log_p = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    if reverse:
        log_p, log_q = log_q, log_p
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _average(kl, w, norm="tokens"):
    """``kl`` (B, L) weighed by ``w``: over counted tokens, per sequence, by B, or by every position."""
    w = w.float()
    if norm == "tokens":
        return (kl * w).sum() / w.sum()
    if norm == "sequence":
        return ((kl * w).sum(-1) / w.sum(-1)).mean()
    if norm == "sum":  # no division at all
        return (kl * w).sum()
    return (kl * w).sum() / (kl.shape[0] if norm == "batch" else kl.numel())


def _nan_message(name):
    return (f"your loss is nan: padded positions' garbage logits give 0 * log 0 (or torch.distributions' inf * 0), "
            f"which the mask cannot remove. Use F.log_softmax in {name} (with F.kl_div, a log-probability target "
            f"needs log_target=True), or select the counted positions first")


def _grad_nan_message():
    return ("the value is right but its gradient is nan: a log of a probability that underflowed to 0 at a padded "
            "position has an infinite derivative, even where torch.where or the mask drops it. Take every log "
            "with F.log_softmax (with F.kl_div, pass log-probabilities as the target too: log_target=True)")


# -- q1: the token-level KD loss of a language model ---------------------------------------------------------


def _shifted(s, t, m, T, norm="tokens", reverse=False, scale=True):
    """The KD loss over shifted positions (logits[:, :-1]) weighed by ``m``, with the given mistakes."""
    kl = _per_token(s[:, :-1], t[:, :-1], T, reverse)
    return _average(kl, m, norm) * (T * T if scale else 1.0)


def _q1_variants(cases):
    def V(f):
        return lambda: [float(f(s, t, a, m, T)) for s, t, a, m, T in cases]
    return _q1_position_variants(V) | _q1_scale_variants(V)


def _q1_position_variants(V):
    """Wrong answers about which positions count (shift, masks, normalisation): message -> values."""
    shifted = _shifted
    return {
        "off by one: the logits at position t predict token t + 1, so the prediction at t counts when token t + 1 "
        "does. Weigh logits[:, :-1] with loss_mask[:, 1:], not loss_mask[:, :-1]":
            V(lambda s, t, a, m, T: shifted(s, t, m[:, :-1], T)),
        "you shifted the wrong way: logits[:, 1:] weighed by loss_mask[:, :-1] scores each prediction at the token "
        "before it, but the logits at position t predict token t + 1. Pair logits[:, :-1] with loss_mask[:, 1:]":
            V(lambda s, t, a, m, T: _average(_per_token(s[:, 1:], t[:, 1:], T), m[:, :-1]) * T * T),
        "you did not shift (or shifted the wrong way, logits[:, 1:] with loss_mask[:, 1:], which is the same): "
        "each position's logits were scored at its own token, but they predict token t + 1. Pair "
        "logits[:, :-1] with loss_mask[:, 1:] (the last position predicts nothing of the sequence)":
            V(lambda s, t, a, m, T: _average(_per_token(s, t, T), m) * T * T),
        "you counted the prompt's tokens: the model is given the prompt, it is not asked to predict it; use "
        "loss_mask (attention_mask is 1 for every real token, the prompt's included: it is what the model's "
        "forward pass gets, not which targets count)":
            V(lambda s, t, a, m, T: shifted(s, t, a[:, 1:], T)),
        "your loss counts the padded positions, whose logits are garbage (nothing trains a model there): "
        "average over the tokens with loss_mask == 1 only, which is 0 at padding as well as in the prompt":
            V(lambda s, t, a, m, T: shifted(s, t, (m + (1 - a))[:, 1:], T)),
        "your loss ignores both masks, so it counts the padded positions, whose logits are garbage, and the "
        "prompt's tokens, which the model is given, not asked to predict. Average over the tokens with "
        "loss_mask == 1 only":
            V(lambda s, t, a, m, T: shifted(s, t, torch.ones_like(m[:, 1:]), T)),
        "you averaged within each sequence, then over the sequences, so a token of a short continuation weighs more "
        "than one of a long one: sum over every counted token of the batch, divide by their number":
            V(lambda s, t, a, m, T: shifted(s, t, m[:, 1:], T, "sequence")),
        "you masked the sum but .mean() divides it by every position, prompt and padding included: divide by "
        "the number of counted tokens (the mask's sum)":
            V(lambda s, t, a, m, T: shifted(s, t, m[:, 1:], T, "positions")),
        "you divided by the batch size B (as reduction='batchmean' does), not by the number of counted tokens: "
        "the loss then grows with the length of the continuations":
            V(lambda s, t, a, m, T: shifted(s, t, m[:, 1:], T, "batch")),
    }


def _q1_scale_variants(V):
    """Wrong answers about the temperature, the direction and the reduction: message -> values."""
    shifted = _shifted
    return {
        "your loss is T times too small: multiply the KL by temperature ** 2, not by temperature":
            V(lambda s, t, a, m, T: shifted(s, t, m[:, 1:], T) / T),
        "F.kl_div(..., reduction='batchmean') on (B, L, V) logits sums over every position, prompt and padding "
        "included, and divides by B: compute one KL per token (reduction='none', sum over the vocabulary), then "
        "average over the counted tokens":
            V(lambda s, t, a, m, T: shifted(s, t, torch.ones_like(m[:, 1:]), T, "batch")),
        "you computed KL(student || teacher), the reverse KL: the distillation loss here is the forward "
        "KL(teacher || student), with the teacher's probabilities as the target":
            V(lambda s, t, a, m, T: shifted(s, t, m[:, 1:], T, reverse=True)),
        "your loss is T^2 too small: multiply the KL by temperature ** 2":
            V(lambda s, t, a, m, T: shifted(s, t, m[:, 1:], T, scale=False)),
        "you divided only the teacher's logits by T: the student's softmax takes its logits / T too":
            V(lambda s, t, a, m, T: shifted(s * T, t, m[:, 1:], T)),
        "you divided only the student's logits by T: the teacher's softmax takes its logits / T too":
            V(lambda s, t, a, m, T: shifted(s, t * T, m[:, 1:], T)),
        "you averaged over the vocabulary too (.mean(-1)): a KL sums over the vocabulary, then averages over the "
        "counted tokens":
            V(lambda s, t, a, m, T: shifted(s, t, m[:, 1:], T) / s.shape[-1]),
        "this is the soft cross-entropy, -sum p log q: the KL plus the teacher's entropy, the same gradient but "
        "another value; the exercise asks for the KL, sum p (log p - log q)":
            V(lambda s, t, a, m, T: _average(_soft_ce(s[:, :-1], t[:, :-1], T), m[:, 1:]) * T * T),
        "F.kl_div takes log-probabilities as its first argument, and you gave it probabilities: use "
        "F.log_softmax(student_logits / T)":
            V(lambda s, t, a, m, T: _average(_probs_as_input(s[:, :-1], t[:, :-1], T), m[:, 1:]) * T * T),
    }


def _soft_ce(s, t, T):
    """-sum_v p log q per position (the soft cross-entropy), (B, L)."""
    return -(F.softmax(t / T, -1) * F.log_softmax(s / T, -1)).sum(-1)


def _probs_as_input(s, t, T):
    """F.kl_div(softmax(s / T), softmax(t / T)) per position: sum_v p (log p - q), (B, L)."""
    p = F.softmax(t / T, -1)
    return (p * (F.log_softmax(t / T, -1) - F.softmax(s / T, -1))).sum(-1)


def _check_lm_kd(call):
    cases = _lm_cases()
    got = [as_float(call(s.clone(), t.clone(), a.clone(), m.clone(), T), "lm_kd_loss") for s, t, a, m, T in cases]
    if any(g != g for g in got):
        raise Wrong(_nan_message("lm_kd_loss"))
    expected = [float(ref.token_kl(s[:, :-1], t[:, :-1], m[:, 1:], T)) for s, t, _, m, T in cases]
    if not all(close(g, e) for g, e in zip(got, expected)):
        i = mismatch(got, expected)
        raise Wrong(diagnose(got, _q1_variants(cases)) or
                    f"your loss is {got[i]:.5f} on a batch where T^2 x the mean over counted targets of KL(teacher "
                    f"|| student), the logits at t scored at token t + 1, is {expected[i]:.5f} (T = {cases[i][-1]:g})")
    s, t, a, m, T = cases[0]
    grad = student_gradient(call, s, t, a, m, T, student_name="student_logits", teacher_name="teacher_logits")
    if grad is None or not bool(torch.isfinite(grad).all()):
        raise Wrong(_grad_nan_message())
    leaf = s.clone().requires_grad_(True)
    reference = torch.autograd.grad(ref.token_kl(leaf[:, :-1], t[:, :-1], m[:, 1:], T), leaf)[0]
    if not close(grad, reference, atol=1e-6):
        raise Wrong("the value is right but the gradient is not: is part of the student's side detached?")


# -- q2: the reverse KL ---------------------------------------------------------------------------------------


def _rev_cases():
    """Aligned (already shifted) logits and loss masks: [(student logits, teacher logits, loss_mask)]."""
    return [(s[:, :-1], t[:, :-1], m[:, 1:]) for s, t, _, m, _ in _lm_cases()]


def _rev_values(cases, kind="reverse", norm="tokens", masked=True):
    out = []
    for s, t, m in cases:
        log_q, log_p = F.log_softmax(s, -1), F.log_softmax(t, -1)
        q = log_q.exp()
        per_token = {"reverse": (q * (log_q - log_p)).sum(-1), "forward": (log_p.exp() * (log_p - log_q)).sum(-1),
                     "cross": -(q * log_p).sum(-1)}[kind]
        out.append(float(_average(per_token, m if masked else torch.ones_like(m), norm)))
    return out


def _rev_gradient(s, t, m, detach_q=False):
    """The student's gradient of the reverse KL, or of the variant whose weights ``q`` are detached.

    (Detaching ``log q`` instead changes nothing: its share of the gradient is sum_v q_v d log q_v = d sum_v q_v = 0.)
    """
    s = s.clone().requires_grad_(True)
    with torch.enable_grad():
        log_q, log_p = F.log_softmax(s, -1), F.log_softmax(t, -1)
        q = log_q.exp().detach() if detach_q else log_q.exp()
        return torch.autograd.grad(_average((q * (log_q - log_p)).sum(-1), m), s)[0]


def _check_reverse(call):
    cases = _rev_cases()
    got = [as_float(call(s.clone(), t.clone(), m.clone()), "reverse_kl_loss") for s, t, m in cases]
    if any(g != g for g in got):
        raise Wrong(_nan_message("reverse_kl_loss"))
    expected = [float(ref.reverse_token_kl(s, t, m)) for s, t, m in cases]
    if not all(close(g, e) for g, e in zip(got, expected)):
        message = diagnose(got, {
            "you computed the forward KL(teacher || student): the reverse KL weighs the log-ratio by the "
            "student's own probabilities, sum_v q_v (log q_v - log p_v)": lambda: _rev_values(cases, "forward"),
            "you computed the student's cross-entropy to the teacher, sum_v q_v (-log p_v), without its "
            "entropy term: KL(q || p) also has + sum_v q_v log q_v": lambda: _rev_values(cases, "cross"),
            "your loss ignores loss_mask: the prompt and the padding count too. Average over the tokens with "
            "loss_mask == 1 only": lambda: _rev_values(cases, masked=False),
            "you averaged within each sequence, then over the sequences: sum over every counted token of the "
            "batch and divide by their number": lambda: _rev_values(cases, norm="sequence"),
            "you masked the sum but .mean() divides it by every position, prompt and padding included: divide "
            "by the number of counted tokens": lambda: _rev_values(cases, norm="positions"),
            "you divided by the batch size B (as reduction='batchmean' does), not by the number of counted tokens: "
            "the loss then grows with the length of the continuations": lambda: _rev_values(cases, norm="batch"),
            "you summed over the counted tokens without dividing: average, dividing by their number (the mask's "
            "sum), so that the loss does not grow with the batch": lambda: _rev_values(cases, norm="sum"),
        })
        i = mismatch(got, expected)
        raise Wrong(message or f"your loss is {got[i]:.5f} on a batch where the mean over counted tokens of "
                    f"KL(student || teacher) is {expected[i]:.5f} (batch {i + 1} of {len(cases)})")
    s, t, m = cases[0]
    grad = student_gradient(call, s, t, m, student_name="student_logits", teacher_name="teacher_logits")
    if grad is None or not bool(torch.isfinite(grad).all()):
        raise Wrong(_grad_nan_message())
    if not close(grad, _rev_gradient(s, t, m), atol=1e-6):
        message = diagnose([grad], {
            "the value is right, but you detached the student's probabilities q that weigh the terms: in the "
            "reverse KL the student's distribution is also the weight, and moving it is how the student leaves "
            "where the teacher has little mass, so the gradient must flow through q as well as log q":
            lambda: [_rev_gradient(s, t, m, detach_q=True)],
        }, atol=1e-6)
        raise Wrong(message or "the value is right but the gradient is not: is part of the student's side "
                    "detached? The gradient flows through both q and log q")


q1 = Exercise(
    "ex09.q1", "The token-level KD loss of a language model", "lm_kd_loss", _check_lm_kd,
    hints=(
        "A language model's logits at position t are its distribution over the next token, t + 1; the teacher's "
        "at the same position are the target. The soft loss is T^2 x KL(teacher || student) for every prediction "
        "whose next token counts, averaged so that every counted token of the batch weighs the same. Which tokens "
        "count is loss_mask's to say: attention_mask is what the model was given, the prompt included, but the "
        "model is not asked to predict its prompt.",
        "logits[:, :-1] are the predictions of the tokens 1 .. L-1, whose mask is loss_mask[:, 1:] (already 0 "
        "at padding: attention_mask is not needed for the loss); F.log_softmax(x / T, dim=-1) gives "
        "log-probabilities over the vocabulary (no 0 * log 0 at padded positions); (p * (log p - log q)).sum(-1) "
        "is one KL per position, shape (B, L - 1); .detach() the teacher.",
        "Drop the last position of both logits and the first position of loss_mask; per position, "
        "KL(teacher || student) over the vocabulary: the detached teacher's probabilities at T weigh its "
        "log-softmax at T minus the student's; multiply by the float loss_mask, sum over the whole batch, divide "
        "by its sum (not by B, not per sequence), times T ** 2.",
    ),
    solution='''
def lm_kd_loss(student_logits, teacher_logits, attention_mask, loss_mask, temperature):
    """T^2 x the mean over counted targets of KL(teacher || student); logits (B, L, V) not yet shifted."""
    ### BEGIN SOLUTION
    T = temperature
    log_q = F.log_softmax(student_logits[:, :-1] / T, dim=-1)       # position t predicts token t + 1
    log_p = F.log_softmax(teacher_logits[:, :-1].detach() / T, dim=-1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1)              # (B, L - 1)
    m = loss_mask[:, 1:].float()          # does token t + 1 count? (attention_mask would count the prompt)
    return T ** 2 * (per_token * m).sum() / m.sum()
    ### END SOLUTION
''',
    success="Correct! Each prediction scored at the token it predicts, only the counted targets, every one weighing "
            "the same.",
)

q2 = Exercise(
    "ex09.q2", "The reverse KL", "reverse_kl_loss", _check_reverse,
    hints=(
        "The reverse KL swaps the roles: KL(student || teacher) = sum_v q_v (log q_v - log p_v), where the "
        "student's own probabilities q weigh the terms. Putting mass where the teacher has little costs the "
        "most, so the student seeks one mode. The weights q are the student's too: they carry its gradient.",
        "F.log_softmax(student_logits, dim=-1) gives log q and its .exp() gives q (both keep their gradient); "
        "the teacher's log-probabilities come from its detached logits; one KL per position with .sum(-1), "
        "shape (B, L); loss_mask.float() weighs the positions.",
        "log q and log p from log_softmax over the vocabulary, the teacher detached; per position the sum over "
        "the vocabulary of exp(log q) x (log q - log p), with nothing of the student detached; then the masked "
        "sum over the batch divided by the mask's sum.",
    ),
    solution='''
def reverse_kl_loss(student_logits, teacher_logits, loss_mask):
    """The mean over counted tokens of KL(student || teacher); aligned logits (B, L, V), loss_mask (B, L)."""
    ### BEGIN SOLUTION
    log_q = F.log_softmax(student_logits, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach(), dim=-1)
    per_token = (log_q.exp() * (log_q - log_p)).sum(-1)     # the gradient flows through q and log q
    m = loss_mask.float()
    return (per_token * m).sum() / m.sum()
    ### END SOLUTION
''',
    success="Correct! The student's own distribution weighs the log-ratio: mode-seeking, as MiniLLM and GKD use it.",
)

__all__ = ["q1", "q2"]
