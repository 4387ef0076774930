"""Exercises for notebook 07 (intermediate layers): a masked attention KL, and a hidden-state loss with a projection.

The references are :func:`kd_tutorial.losses.attention_kl` and
:func:`kd_tutorial.losses.hidden_mse`; the diagnoses compare the learner's values
with known-wrong variants computed on the same padded batches.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .. import losses as ref
from .core import Exercise, LearnerCrash, Wrong, as_float, close, diagnose, mismatch, reaches, student_gradient

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


def _probabilities_as_input(p, q, mask, eps=1e-12):
    """F.kl_div(q, p) handed the student's probabilities q where it wants log-probabilities: sum p (log p - q)."""
    rows = (p * (p.clamp_min(eps).log() - q)).masked_fill(mask[:, None, None, :] == 0, 0.0).sum(-1)
    m = mask[:, None, :].expand_as(rows).float()
    return (rows * m).sum() / m.sum()


def _per_review_kl(p, q, mask, eps=1e-12):
    """The masked row KL averaged within each review first, then over the reviews (a wrong normalisation)."""
    rows = (p * (p.clamp_min(eps).log() - q.clamp_min(eps).log())).masked_fill(mask[:, None, None, :] == 0, 0.0)
    rows = rows.sum(-1)  # (B, heads, L)
    m = mask[:, None, :].expand_as(rows).float()
    return ((rows * m).sum((1, 2)) / m.sum((1, 2))).mean()


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
        "you divided by the number of real query rows, but your sum still holds the padded query rows: zero "
        "them (multiply each row's KL by the attention mask) before you sum, and check that each row's KL sums "
        "over the keys, the last dimension (.sum(-1)), before that mask":
            V(lambda s, t, m: _kl_rows(t, s, m, queries=False) * m.numel() / m.sum()),
        "you summed over heads: average over heads and real query positions":
            V(lambda s, t, m: _kl_rows(t, s, m) * s.shape[1]),
        "you averaged over the keys too: a KL sums over the keys of a row, then averages over rows":
            V(lambda s, t, m: _kl_rows(t, s, m) / m.sum(-1).float().mean()),
        "you averaged over the keys (.mean(-1) divides each row's KL by the padded length L): a KL sums over the "
        "keys of a row; then average over heads and real query rows":
            V(lambda s, t, m: _kl_rows(t, s, m) / m.shape[1]),
        "you summed the row KLs over every head and real query row, then divided by the batch size B (as "
        "reduction='batchmean' does after masking): divide by the number of heads x real query rows instead":
            V(lambda s, t, m: _kl_rows(t, s, m) * s.shape[1] * m.sum() / m.shape[0]),
        "you zeroed the padded positions, then .mean() divided by every row, padded ones included (B x heads x "
        "L): divide the masked sum by the number of real rows (heads x attention_mask.sum())":
            V(lambda s, t, m: _kl_rows(t, s, m) * m.sum() / m.numel()),
        "you averaged each review's rows, then the reviews: every real query row of the batch weighs the same, "
        "so a long review's rows count more than a short one's":
            V(lambda s, t, m: _per_review_kl(t, s, m)),
        "F.kl_div(..., reduction='batchmean') divides the sum over every row, padded rows and every head "
        "included, by the batch size: average over heads and real query rows yourself":
            V(lambda s, t, m: _kl_rows(t, s, m, queries=False) * s.shape[1] * s.shape[2]),
        "you gave F.kl_div the student's probabilities: its first argument must be log-probabilities (take "
        "the log of the clamped student attention), or a KL can come out negative, as yours may":
            V(lambda s, t, m: _probabilities_as_input(t, s, m)),
    })
    i = mismatch(got, expected)
    raise Wrong(message or _added_eps(got, cases) or f"your loss is {got[i]:.5f} on a batch where the masked "
                f"KL(teacher || student) is {expected[i]:.5f} (lengths {LENGTHS[i]})")


def _eps_kl(p, q, mask, eps: float, both: bool):
    """The masked row KL with ``eps`` added inside the student's log (and the teacher's, when ``both``)."""
    log_p = (p + eps).log() if both else p.clamp_min(1e-12).log()
    rows = (p * (log_p - (q + eps).log())).masked_fill(mask[:, None, None, :] == 0, 0.0).sum(-1)
    m = mask[:, None, :].expand_as(rows).float()
    return (rows * m).sum() / m.sum()


def _added_eps(got: list[float], cases) -> str | None:
    """The message for ``log(q + eps)``: right to about eps / q, which is beyond the check's tolerance from 1e-6.
    The eps named is the one (1, 2 or 5 times a power of ten) whose loss is nearest the learner's."""
    fits = []
    for eps in (m * 10.0 ** e for e in range(-7, -1) for m in (1, 2, 5)):  # 1e-7 ... 5e-2
        for both in (False, True):
            values = [float(_eps_kl(t, s, m, eps, both)) for s, t, m in cases]
            if all(close(g, v) for g, v in zip(got, values)):
                fits.append((max(abs(g - v) for g, v in zip(got, values)), eps))
    if not fits:
        return None
    eps = min(fits)[1]
    return (f"you added {eps:g} inside the log (log(q + {eps:g})): that shifts the log of every small probability, "
            "and this attention has many; clamp instead, q.clamp_min(1e-12).log(), which leaves every probability "
            "above 1e-12 as it is")


def _check_attention_gradient(call, case):
    grad = student_gradient(call, *case, student_name="student_attn", teacher_name="teacher_attn")
    if grad is None or not bool(torch.isfinite(grad).all()):
        raise Wrong("the value is right but its gradient is nan: the student's attention on padded keys is exactly "
                    "0, and the derivative of log q there is infinite even where you mask the result afterwards. "
                    "Clamp the probabilities (or mask them) before taking the log")


# (lengths, (S, T, student width, teacher width), mapping); the last mapping is not uniform (the teacher's last
# layers), or an answer that ignores `mapping` and computes round(i * T / S) from the depths would pass
_HIDDEN = [(LENGTHS[0], (2, 4, 4, 8), [2, 4]), (LENGTHS[1], (3, 6, 6, 6), [2, 4, 6]),
           (LENGTHS[2], (2, 6, 4, 12), [3, 6]), ((4, 6, 3), (3, 6, 4, 8), [4, 5, 6])]


class _Projection(torch.nn.Linear):
    """A Linear that notes when its weights are read: by a call, or by F.linear(x, p.weight, p.bias)."""

    used = False

    def __getattr__(self, name):
        if name in ("weight", "bias"):
            self.__dict__["used"] = True
        return super().__getattr__(name)

    def parameters(self, *args, **kwargs):  # W, b = p.parameters(), or a state_dict's tensors: read all the same
        self.__dict__["used"] = True
        return super().parameters(*args, **kwargs)

    def named_parameters(self, *args, **kwargs):
        self.__dict__["used"] = True
        return super().named_parameters(*args, **kwargs)

    def state_dict(self, *args, **kwargs):
        self.__dict__["used"] = True
        return super().state_dict(*args, **kwargs)


class _Watched:
    """Mixin for the sequences handed to the learner: notes each index that was out of range, with its IndexError
    (a learner may catch one, then crash elsewhere)."""

    seq_name, misses, shown, parent = "?", (), "?", None

    def __getitem__(self, key):
        try:
            got = super().__getitem__(key)
        except IndexError as exc:
            miss = (f"{self.shown}[{key!r}]", exc)
            self.misses = (*self.misses, miss)
            if self.parent is not None:  # a slice's miss is its sequence's (teacher_hidden[1:][k])
                self.parent.misses = (*self.parent.misses, miss)
            raise
        if isinstance(key, slice):
            part = _watched(got, self.seq_name)
            part.shown, part.parent = f"{self.shown}[{_slice_text(key)}]", self.parent or self
            return part
        return got


def _slice_text(key: slice) -> str:
    """``1:`` for ``slice(1, None)``, as the learner wrote it."""
    text = ":".join("" if v is None else str(v) for v in (key.start, key.stop))
    return text + (f":{key.step}" if key.step is not None else "")


class _WatchedTuple(_Watched, tuple):
    pass


class _WatchedList(_Watched, list):
    pass


def _watched(seq, name: str):
    """A copy of ``seq`` (a list stays a list, a tuple a tuple) that notes an index out of range under ``name``."""
    out = (_WatchedList if isinstance(seq, list) else _WatchedTuple)(seq)
    out.seq_name = out.shown = name
    return out


def _hidden_cases():
    """(student states, teacher states, mask, projections, mapping) with a narrower student."""
    g = torch.Generator().manual_seed(11)
    out = []
    for lengths, (S, T, hs, ht), mapping in _HIDDEN:
        m = _mask(lengths)
        B, L = m.shape
        student = tuple(torch.randn(B, L, hs, generator=g) for _ in range(S + 1))
        teacher = tuple(torch.randn(B, L, ht, generator=g) for _ in range(T + 1))
        projections = []
        for _ in range(S):
            lin = _Projection(hs, ht)
            with torch.no_grad():
                lin.weight.copy_(torch.randn(ht, hs, generator=g) * 0.5)
                lin.bias.copy_(torch.randn(ht, generator=g) * 0.1)
            projections.append(lin)
        out.append((student, teacher, m, projections, list(mapping)))
    return out


def _uniform(s, t) -> list:
    """The uniform mapping an answer that ignores `mapping` computes from the depths: layer i -> i * T / S."""
    S, T = len(s) - 1, len(t) - 1
    return [round(i * T / S) for i in range(1, S + 1)]


def _hidden_ref(s, t, m, proj, mapping, *, project: bool | str = True, layer=lambda i, tl: (i, tl),
                masked=True):
    total = 0.0
    for i, t_layer in enumerate(mapping, start=1):
        si, ti = layer(i, t_layer)
        y = t[ti]
        x = proj[i - 1](s[si]) if project is True or (project == "if-needed" and s[si].shape[-1] != y.shape[-1]) \
            else s[si]
        if masked:
            total = total + ref.hidden_mse(x, y, m)
        else:
            total = total + F.mse_loss(x, y)
    return total / len(mapping)


_OUT_OF_RANGE = {  # what each sequence holds, and how to index it
    "teacher_hidden": "mapping holds hidden_states indices, counted from 1 (0 is the embeddings), so student layer i "
                      "learns from teacher_hidden[mapping[i - 1]], with no + 1",
    "student_hidden": "index 0 is the embeddings, so student layer i (i = 1..S) is student_hidden[i]",
    "projections": "one per student layer, counted from 0: student layer i (i = 1..S) goes through "
                   "projections[i - 1]",
    "mapping": "one entry per student layer, counted from 0: student layer i (i = 1..S) learns from teacher "
               "layer mapping[i - 1]",
}


def _hidden_crash(crash: LearnerCrash, case, watched) -> Wrong | None:
    """A specific message for a crash on ``case`` when its cause is clear, else None (the crash is shown as is)."""
    s, t, m, proj, mapping = case
    if isinstance(crash.exc, IndexError):  # the sequence whose read raised the crash's own IndexError, if one did
        for w in watched:
            for shown, exc in w.misses:
                if exc is crash.exc:
                    return Wrong(f"your loss reads {shown}, which is not there ({w.seq_name} has {len(w)} "
                                 f"entries): {_OUT_OF_RANGE[w.seq_name]}")
        return None
    if s[1].shape[-1] != t[1].shape[-1] and not any(p.used for p in proj):
        return Wrong(f"your loss fails when the student ({s[1].shape[-1]} wide) is narrower than the teacher "
                     f"({t[1].shape[-1]} wide): {crash}. Pass the student's states through its projection first")
    return None


def _call_hidden(call, case) -> float:
    """The learner's loss on ``case``, given sequences that note an index out of range."""
    s, t, m, proj, mapping = case
    for p in proj:
        p.used = False
    watched = [_watched(s, "student_hidden"), _watched(t, "teacher_hidden"), _watched(proj, "projections"),
               _watched(mapping, "mapping")]
    try:
        return as_float(call(watched[0], watched[1], m, *watched[2:]), "hidden_state_loss")
    except LearnerCrash as crash:
        wrong = _hidden_crash(crash, case, watched)
        if wrong is None:
            raise
        raise wrong from None


def _check_hidden(call):
    cases = _hidden_cases()
    got = [_call_hidden(call, c) for c in cases]
    projected = [any(p.used for p in c[3]) for c in cases if c[0][1].shape[-1] != c[1][1].shape[-1]]  # read now:
    with torch.no_grad():  # the reference reads them too
        expected = [float(_hidden_ref(*c)) for c in cases]
    if all(close(g, e) for g, e in zip(got, expected)):
        _check_hidden_gradient(call, cases[0])
        return
    if not any(projected):  # the student's states sliced or padded to the other width, never projected
        raise Wrong("your loss never uses projections, and the student is narrower than the teacher in some "
                    "batches: a slice or a zero-padding of either state is not a learned map; pass every student "
                    "state through its projection, projections[i - 1](student_hidden[i])")
    V = lambda **kw: (lambda: [float(_hidden_ref(*c, **kw)) for c in cases])  # noqa: E731
    with torch.no_grad():
        message = diagnose(got, {
            f"your loss ignores `mapping`: it matched student layer i with teacher layer i x T / S (the uniform "
            f"mapping), but mapping may pick any layers (here {cases[-1][-1]}, the last ones): use "
            "teacher_hidden[mapping[i - 1]]":
                lambda: [float(_hidden_ref(s, t, m, p, _uniform(s, t))) for s, t, m, p, _ in cases],
            "you skipped the projection where the widths agree: this exercise gives a learned projection for every "
            "layer (kd_tutorial's DistillationStudent holds nn.Identity where widths agree; here they are Linear "
            "layers to train), so apply projections[i - 1] to every student_hidden[i]":
                V(project="if-needed"),
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
            "you divided by the number of real positions, but your sum still holds the padded ones: zero them "
            "(multiply the squared errors by the attention mask) before you sum":
                lambda: [float(_hidden_ref(*c, masked=False)) * c[2].numel() / float(c[2].sum()) for c in cases],
            "you zeroed the padded positions, then .mean() divided by every position, padded ones included (B x L "
            "x width): divide the masked sum by the number of real positions (attention_mask.sum() x width)":
                lambda: [e * float(c[2].sum()) / c[2].numel() for c, e in zip(cases, expected)],
            "you summed over the mapped layers: average them (divide by len(mapping)), so that the term's weight "
            "does not grow with the student's depth":
                lambda: [e * len(c[-1]) for c, e in zip(cases, expected)],
            "you summed over the hidden units: the mean squared error averages over them too (divide by the "
            "teacher's width, teacher_hidden[0].shape[-1]), as over the real tokens":
                lambda: [e * c[1][0].shape[-1] for c, e in zip(cases, expected)],
        })
    message = message or _ignores_mapping(call, cases[-1], got[-1])
    i = mismatch(got, expected)
    raise Wrong(message or f"your loss is {got[i]:.5f} where the mean over mapped layers of the masked MSE is "
                f"{expected[i]:.5f} (batch {i + 1} of {len(cases)})")


def _ignores_mapping(call, case, value: float) -> str | None:
    """A message when the learner's loss stays ``value`` on ``case`` with another mapping (layers 1..S)."""
    s, t, m, proj, mapping = case
    other = list(range(1, len(mapping) + 1))
    try:
        again = _call_hidden(call, (s, t, m, proj, other))
    except (LearnerCrash, Wrong):
        return None
    if not close(again, value):
        return None
    return (f"your loss ignores `mapping`: it returned the same value when the check changed mapping from "
            f"{mapping} to {other}. Student layer i learns from teacher_hidden[mapping[i - 1]], whichever layers "
            "mapping picks")


def _check_hidden_gradient(call, case):
    """The loss must train the student's layers and their projections, and leave the teacher's states alone."""
    s, t, m, proj, mapping = case
    s = tuple(x.clone().requires_grad_(True) for x in s)
    t = tuple(x.clone().requires_grad_(True) for x in t)
    proj = [copy.deepcopy(p) for p in proj]
    with torch.enable_grad():
        loss = call(s, t, m, proj, mapping)
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            raise Wrong("the value is right but it carries no gradient: return a tensor (no .item(), no "
                        "torch.no_grad()), or neither the student nor its projections can learn from it")
        try:
            loss.backward()
        except Exception as exc:  # noqa: BLE001 - the learner's graph failed
            raise LearnerCrash(exc) from None
    if any(reaches(x.grad) for x in t):
        raise Wrong("a gradient reaches teacher_hidden, so it reaches the teacher, which is frozen: use .detach() "
                    "on the teacher's states")
    if any(p.weight.grad is None or float(p.weight.grad.abs().sum()) == 0 for p in proj):
        raise Wrong("no gradient reaches the projections: they are learned with the student, so do not detach "
                    "their output or run them under torch.no_grad()")
    if any(s[i].grad is None or float(s[i].grad.abs().sum()) == 0 for i in range(1, len(mapping) + 1)):
        raise Wrong("no gradient reaches the student's states: do not detach them")


# -- q3: a masked token-level KL ---------------------------------------------------------------------------


def _token_cases():
    g = torch.Generator().manual_seed(13)
    out = []
    for B, L, V, T, lengths in [(3, 5, 7, 2.0, [5, 2, 3]), (2, 6, 4, 1.0, [6, 1]), (4, 4, 5, 3.0, [4, 4, 2, 1])]:
        mask = torch.tensor([[1] * n + [0] * (L - n) for n in lengths])
        out.append((torch.randn(B, L, V, generator=g) * 2, torch.randn(B, L, V, generator=g) * 3, mask, T))
    return out


def _token_kl(s, t, T, dim=-1):
    """KL(teacher || student) per token at temperature T (no T^2), shape (B, L)."""
    p = F.softmax(t / T, dim)
    return (p * (F.log_softmax(t / T, dim) - F.log_softmax(s / T, dim))).sum(dim if dim == -1 else -1)


def _token_reference(s, t, m, T, dim=-1, scale=True, norm="tokens", masked=True, student_t=True, entropy=True):
    """T^2 x the mean over real tokens of KL(teacher || student), and its known-wrong variants: ``norm`` "batch"
    divides by B, "positions" by every position, "real" by the real tokens' count, "sequence" averages each review
    first."""
    kl = _token_kl(s * (1.0 if student_t else T), t, T, dim) * (T * T if scale else 1.0)
    if not entropy:  # soft cross-entropy: the KL plus the teacher's entropy
        p = F.softmax(t / T, -1)
        kl = kl - T * T * (p * F.log_softmax(t / T, -1)).sum(-1)
    w = m.float() if masked else torch.ones_like(m, dtype=torch.float)
    if norm == "tokens":
        return (kl * w).sum() / w.sum()
    if norm == "batch":
        return (kl * w).sum() / m.shape[0]
    if norm == "positions":  # every position, padding included
        return (kl * w).sum() / m.numel()
    if norm == "real":  # by the real tokens' count, whatever was summed
        return (kl * w).sum() / m.float().sum()
    return ((kl * w).sum(-1) / w.sum(-1)).mean()  # per sequence, then over sequences


def _kl_div_of_probabilities(s, t, m, T) -> float:
    """The masked token KL with F.kl_div given the student's probabilities where it takes log-probabilities."""
    kl = F.kl_div(F.softmax(s / T, -1), F.softmax(t / T, -1), reduction="none").sum(-1)
    w = m.float()
    return float((kl * w).sum() / w.sum() * T * T)


def _check_token_kl(call):
    cases = _token_cases()
    got = [as_float(call(s.clone(), t.clone(), m.clone(), T), "token_kd_loss") for s, t, m, T in cases]
    expected = [float(_token_reference(*c)) for c in cases]
    if not all(close(g, e) for g, e in zip(got, expected)):
        V = lambda **kw: (lambda: [_token_reference(*c, **kw) for c in cases])  # noqa: E731
        message = diagnose(got, {
            "your loss counts the padded positions: average over the real tokens only (attention_mask == 1)":
                V(masked=False),
            "you divided by the number of real tokens, but your sum still holds the padded positions: zero them "
            "(multiply each token's KL by the attention mask) before you sum":
                V(norm="real", masked=False),
            "you averaged within each sequence, then over the sequences, so a token of a short review weighs more "
            "than one of a long review: sum over all real tokens of the batch, divide by their number":
                V(norm="sequence"),
            "you divided by the batch size B (as reduction='batchmean' does), not by the number of real tokens: "
            "the loss then grows with the reviews' length":
                V(norm="batch"),
            "you summed over every position, padding included, and divided by the batch size B (F.kl_div's "
            "reduction='batchmean' on (B, L, V) logits does that): average over the real tokens only":
                V(norm="batch", masked=False),
            "you zeroed the padded positions, then .mean() divided by every position, padded ones included (B x "
            "L): divide the masked sum by the number of real tokens (attention_mask.sum())":
                V(norm="positions"),
            "you averaged over the vocabulary: a KL sums over the V entries of each token's distribution "
            "(.sum(-1)), then averages over the real tokens":
                lambda: [_token_reference(*c) / c[0].shape[-1] for c in cases],
            "your softmax runs over the sequence dimension: each token's distribution is over the vocabulary "
            "(the last dimension)":
                V(dim=1),
            "your loss is T^2 too small: multiply the KL by temperature ** 2":
                V(scale=False),
            "your loss ignores the temperature: divide both models' logits by T before the softmax, and multiply "
            "the KL by T ** 2":
                lambda: [_token_reference(s, t, m, 1.0) for s, t, m, _ in cases],
            "your loss is T times too small: multiply the KL by temperature ** 2, not by temperature":
                lambda: [_token_reference(s, t, m, T) / T for s, t, m, T in cases],
            "you computed KL(student || teacher): the teacher's probabilities are the target":
                lambda: [_token_reference(t, s, m, T) for s, t, m, T in cases],
            "F.kl_div expects log-probabilities as its first argument: use log_softmax(student_logits / T), not "
            "softmax":
                lambda: [_kl_div_of_probabilities(*c) for c in cases],
            "you divided only the teacher's logits by T: the student's softmax takes its logits / T too "
            "(correctness note 5: temperature on both sides)":
                V(student_t=False),
            "you computed the soft cross-entropy, -sum p log q: it is the KL plus the teacher's entropy, the same "
            "gradient but another value; the exercise asks for the KL, sum p (log p - log q)":
                V(entropy=False),
        })
        i = mismatch(got, expected)
        raise Wrong(message or f"your loss is {got[i]:.4f}, expected {expected[i]:.4f} on batch {i + 1} of "
                    f"{len(cases)}, T = {cases[i][3]:g} (T^2 x the mean over real tokens of KL(teacher || student) "
                    "over the vocabulary)")
    s, t, m, T = cases[0]
    grad = student_gradient(call, s, t, m, T, student_name="student_logits", teacher_name="teacher_logits")
    if grad is not None and reaches(grad[m == 0]):
        raise Wrong("a gradient reaches the student's logits at padded positions: mask them out of the sum")


q1 = Exercise(
    "ex07.q1", "A masked attention KL", "attention_kl_loss", _check_attention,
    hints=(
        "Each row of an attention map is a probability distribution over the keys, so the teacher's rows can "
        'be matched with a KL divergence, KL(teacher row || student row). Padded keys carry no probability '
        'and padded queries are not real rows: neither may count, and the teacher is a fixed target.',
        'Build a (B, 1, 1, L) key mask and a (B, 1, L) query mask from attention_mask by indexing with None; '
        'p * (log p - log q) with clamp_min(1e-12) before the log avoids log(0) = -inf and a nan gradient; '
        'masked_fill(~mask.bool(), 0.0) zeroes padded keys (attention_mask holds 0/1 integers: ~ needs bools); '
        '.detach() the teacher.',
        'rows = the sum over the last dimension (keys) of p * (log p - log q), with p the detached teacher, '
        'both clamped before the log and padded keys zeroed; then average rows over the heads and the real '
        "query positions only: multiply by the query mask expanded to rows' shape and divide by its sum.",
    ),
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
    hints=(
        "Intermediate-layer distillation asks each student layer to reproduce a chosen teacher layer's hidden"
        " states. The student is narrower, so a learned projection maps its states to the teacher's width; "
        'padded positions do not count.',
        'student_hidden and teacher_hidden are tuples of (B, L, width) tensors whose index 0 is the '
        "embeddings' output, so student layer i is student_hidden[i] for i = 1..S; projections[i - 1] "
        'projects it; mapping[i - 1] is the teacher layer it imitates; attention_mask[..., None] broadcasts '
        'over the hidden units.',
        'For i = 1..S: s = projections[i - 1](student_hidden[i]), t = teacher_hidden[mapping[i - 1]] '
        'detached; the squared error summed over real tokens and hidden units, divided by (number of real '
        'tokens x teacher width); return the mean of these S values.',
    ),
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

q3 = Exercise(
    "ex07.q3", "A masked token-level KL", "token_kd_loss", _check_token_kl,
    hints=(
        "With one prediction per token (a masked-language-model head, a tagger), the soft loss is the same "
        "T^2 x KL(teacher || student) as notebook 03, but for every token: each token's logits give a "
        "distribution over the vocabulary. Padded tokens are not predictions, and every real token of the batch "
        "weighs the same.",
        "F.log_softmax(x / T, dim=-1) and F.softmax(... , dim=-1) work on (B, L, V) tensors; "
        "F.kl_div(log_q, p, reduction='none').sum(-1) gives one KL per token, shape (B, L); "
        "attention_mask.float() weighs them; .detach() the teacher.",
        "per_token = the KL over the last dimension (vocabulary) between the detached teacher's and the student's "
        "distributions at temperature T, one value per (review, position); multiply by the float mask, sum over "
        "the whole batch, divide by the mask's sum (not by B, not per sequence), and scale by T ** 2.",
    ),
    solution='''
def token_kd_loss(student_logits, teacher_logits, attention_mask, temperature):
    """T^2 x the mean over real tokens of KL(teacher || student) over the vocabulary; logits (B, L, V)."""
    ### BEGIN SOLUTION
    T = temperature
    log_q = F.log_softmax(student_logits / T, dim=-1)
    p = F.softmax(teacher_logits.detach() / T, dim=-1)
    per_token = F.kl_div(log_q, p, reduction="none").sum(-1)        # (B, L)
    m = attention_mask.float()
    return T ** 2 * (per_token * m).sum() / m.sum()
    ### END SOLUTION
''',
    success="Correct! One KL per real token, every token weighing the same: the MLM loss of DistilBERT, softened.",
)

__all__ = ["q1", "q2", "q3"]
