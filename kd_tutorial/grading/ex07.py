"""Exercises for notebook 07 (intermediate layers): a masked attention KL, and a hidden-state loss with a projection.

The references are :func:`kd_tutorial.losses.attention_kl` and
:func:`kd_tutorial.losses.hidden_mse`; the diagnoses compare the learner's values
with known-wrong variants computed on the same padded batches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import losses as ref
from .core import Exercise, LearnerCrash, Wrong, as_float, close, diagnose, student_gradient

LENGTHS = [(7, 4, 2), (5, 5, 3, 1), (6, 2)]


def _mask(lengths) -> torch.Tensor:
    return (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()


def _attention(g, mask, heads):
    """Attention probabilities as BERT makes them: padded keys get exactly 0, padded query rows are real rows."""
    scores = torch.randn(mask.shape[0], heads, mask.shape[1], mask.shape[1], generator=g) * 2
    return scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min).softmax(-1)


def _attention_cases():
    g = torch.Generator().manual_seed(7)
    out = []
    for lengths, heads in zip(LENGTHS, (2, 3, 4)):
        m = _mask(lengths)
        out.append((_attention(g, m, heads), _attention(g, m, heads), m))
    return out


def _kl_rows(p, q, mask, keys=True, queries=True, eps=1e-12):
    """Variants of the row KL: ``keys``/``queries`` False forget to mask them."""
    log_p, log_q = p.clamp_min(eps).log(), q.clamp_min(eps).log()
    rows = p * (log_p - log_q)
    if keys:
        rows = rows.masked_fill(mask[:, None, None, :] == 0, 0.0)
    rows = rows.sum(-1)
    if not queries:
        return rows.mean()
    m = mask[:, None, :].expand_as(rows).float()
    return (rows * m).sum() / m.sum()


def _check_attention(call):
    cases = _attention_cases()
    got = []
    for s, t, m in cases:
        value = as_float(call(s.clone(), t.clone(), m.clone()), "attention_kl_loss")
        if value != value:  # nan
            raise Wrong("your loss is nan: the teacher gives padded keys a probability of exactly 0, and "
                        "0 * log 0 is nan in floating point. Leave padded keys out of the sum over keys "
                        "(or clamp the probabilities before the log)")
        got.append(value)
    expected = [float(ref.attention_kl(s, t, m)) for s, t, m in cases]
    if all(close(g, e) for g, e in zip(got, expected)):
        _check_attention_gradient(call, cases[1])
        return
    V = lambda f: (lambda: [float(f(s, t, m)) for s, t, m in cases])  # noqa: E731
    message = diagnose(got, {
        "you computed KL(student || teacher): the teacher's attention is the target distribution p in "
        "sum p log(p / q)":
            V(lambda s, t, m: _kl_rows(s, t, m)),
        "your average includes the padded query positions: average over heads and *real* queries only":
            V(lambda s, t, m: _kl_rows(t, s, m, queries=False)),
        "your average includes the padded query positions, and you summed over heads instead of averaging":
            V(lambda s, t, m: _kl_rows(t, s, m, queries=False) * s.shape[1]),
        "you summed over heads: average over heads and real query positions":
            V(lambda s, t, m: _kl_rows(t, s, m) * s.shape[1]),
        "you averaged over the keys too: a KL sums over the keys of a row, then averages over rows":
            V(lambda s, t, m: _kl_rows(t, s, m) / m.sum(-1).float().mean()),
        "F.kl_div(..., reduction='batchmean') divides the sum over every row, padded rows and every head "
        "included, by the batch size: average over heads and real query rows yourself":
            V(lambda s, t, m: _kl_rows(t, s, m, queries=False) * s.shape[1] * s.shape[2]),
    })
    raise Wrong(message or f"your loss is {got[0]:.5f} on a batch where the masked KL(teacher || student) "
                f"is {expected[0]:.5f} (lengths {LENGTHS[0]})")


def _check_attention_gradient(call, case):
    grad = student_gradient(call, *case, student_name="student_attn", teacher_name="teacher_attn")
    if grad is None or not bool(torch.isfinite(grad).all()):
        raise Wrong("the value is right but its gradient is nan: the student's attention on padded keys is exactly "
                    "0, and the derivative of log q there is infinite even where you mask the result afterwards. "
                    "Clamp the probabilities (or mask them) before taking the log")


def _hidden_cases():
    """(student states, teacher states, mask, projections, mapping) with a narrower student."""
    g = torch.Generator().manual_seed(11)
    out = []
    for lengths, (S, T, hs, ht), mapping in zip(LENGTHS, [(2, 4, 4, 8), (3, 6, 6, 6), (2, 6, 4, 12)],
                                                ([2, 4], [2, 4, 6], [3, 6])):
        m = _mask(lengths)
        B, L = m.shape
        student = tuple(torch.randn(B, L, hs, generator=g) for _ in range(S + 1))
        teacher = tuple(torch.randn(B, L, ht, generator=g) for _ in range(T + 1))
        projections = []
        for _ in range(S):
            lin = torch.nn.Linear(hs, ht)
            with torch.no_grad():
                lin.weight.copy_(torch.randn(ht, hs, generator=g) * 0.5)
                lin.bias.copy_(torch.randn(ht, generator=g) * 0.1)
            projections.append(lin)
        out.append((student, teacher, m, projections, mapping))
    return out


def _hidden_ref(s, t, m, proj, mapping, *, project=True, layer=lambda i, tl: (i, tl), masked=True):
    total = 0.0
    for i, t_layer in enumerate(mapping, start=1):
        si, ti = layer(i, t_layer)
        x = proj[i - 1](s[si]) if project else s[si]
        y = t[ti]
        if masked:
            total = total + ref.hidden_mse(x, y, m)
        else:
            total = total + F.mse_loss(x, y)
    return total / len(mapping)


def _check_hidden(call):
    cases = _hidden_cases()
    got = []
    for s, t, m, proj, mapping in cases:
        try:
            got.append(as_float(call(s, t, m, proj, mapping), "hidden_state_loss"))
        except LearnerCrash as crash:
            if s[1].shape[-1] != t[1].shape[-1]:
                raise Wrong(f"your loss fails when the student ({s[1].shape[-1]} wide) is narrower than the "
                            f"teacher ({t[1].shape[-1]} wide): {crash}. Pass the student's states through its "
                            "projection first") from None
            raise
    with torch.no_grad():
        expected = [float(_hidden_ref(*c)) for c in cases]
    if all(close(g, e) for g, e in zip(got, expected)):
        return
    V = lambda **kw: (lambda: [float(_hidden_ref(*c, **kw)) for c in cases])  # noqa: E731
    with torch.no_grad():
        message = diagnose(got, {
            "you compared the student's states with the teacher's without the projection: the widths may agree, "
            "but the student's space is not the teacher's; use projections[i - 1](student_hidden[i])":
                V(project=False),
            "student layer i must learn from teacher layer mapping[i - 1] (hidden_states indices: 0 is the "
            "embeddings), not teacher layer i":
                V(layer=lambda i, tl: (i, i)),
            "off by one: hidden_states[0] is the embeddings' output, so student layer i is student_hidden[i] "
            "(not [i - 1])":
                V(layer=lambda i, tl: (i - 1, tl)),
            "off by one: mapping holds hidden_states indices (1-based layers), so the teacher's state is "
            "teacher_hidden[mapping[i - 1]] (not [mapping[i - 1] - 1])":
                V(layer=lambda i, tl: (i, tl - 1)),
            "your average includes the padded positions: average over real tokens (and hidden units) only":
                V(masked=False),
        })
    raise Wrong(message or f"your loss is {got[0]:.5f} where the mean over mapped layers of the masked MSE is "
                f"{expected[0]:.5f}")


q1 = Exercise(
    "ex07.q1", "A masked attention KL", "attention_kl_loss", _check_attention,
    hint="""For each head and each real query position i, KL(teacher row || student row) sums over the real keys j
    of p log(p / q); then average over heads and real queries. Build a (B, 1, 1, L) key mask and a (B, 1, L) query
    mask from attention_mask; a probability of exactly 0 needs care inside a log.""",
    solution='''
def attention_kl_loss(student_attn, teacher_attn, attention_mask):
    """KL(teacher || student) per attention row, over real keys; mean over heads and real queries."""
    ### BEGIN SOLUTION
    keys = attention_mask[:, None, None, :].bool()          # (B, 1, 1, L)
    p = teacher_attn.detach()
    log_p = p.clamp_min(1e-12).log()
    log_q = student_attn.clamp_min(1e-12).log()
    rows = (p * (log_p - log_q)).masked_fill(~keys, 0.0).sum(-1)   # (B, heads, L): one KL per query row
    queries = attention_mask[:, None, :].expand_as(rows).float()
    return (rows * queries).sum() / queries.sum()
    ### END SOLUTION
''',
    success="Correct! KL(teacher || student) per row, padded keys and padded queries left out.",
)

q2 = Exercise(
    "ex07.q2", "A hidden-state loss through a projection", "hidden_state_loss", _check_hidden,
    hint="""Loop over the student's layers i = 1..S: take projections[i - 1](student_hidden[i]) and
    teacher_hidden[mapping[i - 1]] (index 0 of both tuples is the embeddings' output). Their squared error is
    averaged over real tokens and hidden units (attention_mask); then average over the S layers.""",
    solution='''
def hidden_state_loss(student_hidden, teacher_hidden, attention_mask, projections, mapping):
    """Mean over mapped layers of the masked MSE between projected student states and teacher states."""
    ### BEGIN SOLUTION
    m = attention_mask[..., None].float()                     # (B, L, 1)
    total = 0.0
    for i, t_layer in enumerate(mapping, start=1):
        s = projections[i - 1](student_hidden[i])             # (B, L, teacher width)
        t = teacher_hidden[t_layer].detach()
        total = total + ((s - t) ** 2 * m).sum() / (m.sum() * t.shape[-1])
    return total / len(mapping)
    ### END SOLUTION
''',
    success="Correct! Projected, mapped to the right layers, averaged over real tokens only.",
)

__all__ = ["q1", "q2"]
