"""Exercises for notebook 03 (knowledge-distillation losses).

The reference is :mod:`kd_tutorial.losses`; the diagnoses compare the
learner's values with known-wrong variants computed on the same inputs.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .. import losses as ref
from .core import (Exercise, LearnerCrash, Wrong, as_float, as_loss_float, close, diagnose, ignored_settings,
                   mismatch, student_gradient, wrong_return)


def _cases():
    g = torch.Generator().manual_seed(4)
    shapes = [(3, 4, 2.0), (5, 3, 3.0), (2, 6, 1.0), (4, 2, 5.0)]
    return [(torch.randn(B, C, generator=g) * 2, torch.randn(B, C, generator=g) * 3, T)
            for B, C, T in shapes]


def _kl(log_q_input, target, reduction="batchmean"):
    with warnings.catch_warnings():  # reduction="mean" warns: that is the learner's bug we reproduce
        warnings.simplefilter("ignore")
        return F.kl_div(log_q_input, target, reduction=reduction)


def _soft_variants(cases, combine=None):
    """Known-wrong soft terms on ``cases`` (student, teacher, T), by message; ``combine(i, soft)`` builds case i's
    whole loss around each soft term (q2), the soft term alone by default (q1). A factor that depends on the batch
    (C for reduction='mean', B for 'sum') differs from case to case: the message gives it for the first case, the
    one a mistake that matches every case is quoted on."""
    ls, sm = F.log_softmax, F.softmax
    B, C = cases[0][0].shape
    combine = combine or (lambda i, soft: soft)
    V = lambda f: (lambda: [combine(i, f(s, t, T)) for i, (s, t, T) in enumerate(cases)])  # noqa: E731
    return {
        f"your loss is {C}x too small on a batch of {C} classes (C times for C classes): did you use "
        "reduction='mean'? It divides by batch size x number of classes; use reduction='batchmean'":
            V(lambda s, t, T: _kl(ls(s / T, -1), sm(t / T, -1), "mean") * T * T),
        f"your loss is {B}x too large on a batch of {B} reviews (B times for a batch of B): reduction='sum' adds "
        "over the batch; use reduction='batchmean'":
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
        "your softmax runs over the batch (dim=0): each review's distribution is over its classes, the last "
        "dimension (dim=-1)":
            V(lambda s, t, T: _kl(ls(s / T, 0), sm(t / T, 0)) * T * T),
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
    if any(g != g for g in got):
        raise Wrong("your loss is nan: F.kl_div's target must be probabilities, softmax(teacher_logits / T); "
                    "log-probabilities need log_target=True. In a hand-written KL, use F.log_softmax for every log "
                    "(0 * log 0 is nan)")
    if not all(close(g, e) for g, e in zip(got, expected)):
        message = diagnose(got, _soft_variants(cases) | {
            f"your loss ignores its temperature argument (it computed T = {fixed:g} whatever T it was given): "
            "use the temperature passed in":
                (lambda fixed=fixed: [float(ref.kl_divergence(s, t, fixed)) for s, t, _ in cases])
            for fixed in (1.0, 2.0, 4.0)})
        i = mismatch(got, expected)
        s, t, T = cases[i]
        raise Wrong(message or f"your loss is {got[i]:.4f} for a batch where T^2 * KL (batchmean) is "
                    f"{expected[i]:.4f} (B={s.shape[0]}, C={s.shape[1]}, T={T})")
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
    m = y >= 0
    return F.cross_entropy(s[m], y[m]) if bool(m.any()) else s.sum() * 0


def _ce(s, y):
    """The course's hard term: the cross-entropy summed over labelled rows, divided by all B rows."""
    return ref.hard_cross_entropy(s, y)


def _in_soft_term(message: str) -> str:
    """A q1 message about a whole soft loss, reworded for the soft term of q2's loss."""
    return message.replace("your loss", "your soft term").replace("this is the", "your soft term is the")


def _full_variants(cases) -> dict:
    """q2's known-wrong losses, by message: a mistake in the hard term or the weighting, one of q1's soft-term
    mistakes (with the right hard term), or a temperature or alpha ignored."""
    kl = ref.kl_divergence
    V = lambda f: (lambda: [f(s, t, y, T, a) for s, t, y, T, a in cases])  # noqa: E731
    soft = _soft_variants([(s, t, T) for s, t, _, T, _ in cases],
                          lambda i, v: cases[i][4] * v + (1 - cases[i][4]) * _ce(cases[i][0], cases[i][2]))
    return {
        "alpha weights the soft (teacher) term: use alpha * soft + (1 - alpha) * hard":
            V(lambda s, t, y, T, a: (1 - a) * kl(s, t, T) + a * _ce(s, y)),
        "the hard-label cross-entropy must use the student's logits at T = 1, not divided by T":
            V(lambda s, t, y, T, a: a * kl(s, t, T) + (1 - a) * _ce(s / T, y)),
        "the hard-label cross-entropy uses the student's logits at T = 1 and no T^2 factor: only the soft term "
        "is scaled by T^2":
            V(lambda s, t, y, T, a: a * kl(s, t, T) + (1 - a) * T * T * _ce(s / T, y)),
        "your soft term is missing its T^2 factor":
            V(lambda s, t, y, T, a: a * kl(s, t, T) / (T * T) + (1 - a) * _ce(s, y)),
        "you averaged the hard term over the labelled rows only: then a labelled review weighs more when "
        "the batch holds fewer of them. Divide the sum over labelled rows by the whole batch size, so every "
        "review weighs 1/B":
            V(lambda s, t, y, T, a: a * kl(s, t, T) + (1 - a) * _ce_lab(s, y)),
        "your hard term is the sum over the labelled rows, not divided by the batch size: divide it by B "
        "(len(labels)), so every review weighs 1/B":
            V(lambda s, t, y, T, a: a * kl(s, t, T) + (1 - a) * _ce(s, y) * len(y)),
        "F.nll_loss expects log-probabilities, you passed raw logits: use F.cross_entropy (or "
        "F.nll_loss(F.log_softmax(student_logits, -1), ...)) for the hard term":
            V(lambda s, t, y, T, a: a * kl(s, t, T)
              + (1 - a) * F.nll_loss(s, y, ignore_index=-1, reduction="sum") / len(y)),
        "your hard term counts the unlabelled rows (label -1) as class 0: they must add nothing to it "
        "(keep the rows with labels >= 0), not be clamped to a class":
            V(lambda s, t, y, T, a: a * kl(s, t, T) + (1 - a) * _ce(s, y.clamp_min(0))),
        "your loss has no hard-label term: add (1 - alpha) * cross-entropy with the labels":
            V(lambda s, t, y, T, a: a * kl(s, t, T)),
        "this is the seed article's loss, F.cross_entropy(student_logits, softmax(teacher_logits)): "
        "no temperature, no T^2, no hard-label term":
            V(lambda s, t, y, T, a: F.cross_entropy(s, F.softmax(t, -1))),
    } | {_in_soft_term(m): f for m, f in soft.items()} | {
        f"your loss ignores its {name} argument (it computed {name} = {fixed:g} whatever it was given): use "
        f"the {name} passed in":
            V(lambda s, t, y, T, a, name=name, fixed=fixed: ref.distillation_loss(
                s, t, y, fixed if name == "temperature" else T, fixed if name == "alpha" else a))
        for name, values in (("temperature", (1.0, 2.0, 4.0)), ("alpha", (0.5, 0.9))) for fixed in values}


def _sentence(crash) -> str:
    """A crash's text ending in one full stop (a NumPy or torch message may already end in one)."""
    said = str(crash)
    return said if said.endswith(".") else said + "."


def _check_full(call):
    cases = _label_cases()
    got = []
    for i, (s, t, y, T, a) in enumerate(cases):
        try:
            got.append(as_float(call(s.clone(), t.clone(), y.clone(), T, a), "kd_loss"))
        except LearnerCrash as crash:
            if bool((y == -1).any()):
                raise Wrong(f"your loss fails on a batch with unlabelled rows (label -1): {_sentence(crash)} "
                            "Unlabelled rows add 0 to the hard term: keep the rows with labels >= 0, e.g. "
                            "F.cross_entropy(logits[labelled], labels[labelled], reduction='sum') / batch size"
                            ) from None
            raise
    expected = [float(ref.distillation_loss(s, t, y, T, a)) for s, t, y, T, a in cases]
    if not all(close(g, e) for g, e in zip(got, expected)):
        message = diagnose(got, _full_variants(cases))
        i = mismatch(got, expected)
        raise Wrong(message or "your loss differs from alpha * T^2 * KL + (1 - alpha) * CE "
                    f"(got {got[i]:.4f}, expected {expected[i]:.4f} on batch {i + 1} of {len(cases)}, T = "
                    f"{cases[i][3]:g}, alpha = {cases[i][4]:g})")
    # a batch of unlabelled transfer reviews only: the hard term must vanish
    s, t, _, T, a = cases[0]
    y = torch.full((s.shape[0],), -1)
    try:
        value = as_float(call(s.clone(), t.clone(), y, T, a), "kd_loss")
    except LearnerCrash as crash:
        raise Wrong(f"your loss fails on a batch of unlabelled reviews only (all labels -1): {_sentence(crash)} "
                    "The hard term is 0 there") from None
    if not close(value, float(ref.distillation_loss(s, t, y, T, a))):
        raise Wrong("on a batch of unlabelled reviews only (all labels -1) the hard term must be 0 "
                    f"(a mean over no labelled row is nan), got {value:.4f}")
    # the loss trains the student (a float from .item() or a value under torch.no_grad() cannot), never the teacher
    student_gradient(call, *cases[1], student_name="student_logits", teacher_name="teacher_logits")
    _check_any_negative_label(call, cases[1])


def _check_any_negative_label(call, case):
    """A row labelled -100 (transformers' "ignore" label) is unlabelled too, as in kd_tutorial.losses: any negative
    label is. ``ignore_index=-1`` ignores -1 only, and F.cross_entropy refuses -100 as a class."""
    s, t, y, T, a = case
    y = y.masked_fill(y == -1, -100)
    advice = ("marks an unlabelled review (-1, or -100 as in transformers), and ignore_index=-1 ignores -1 only: keep "
              "the rows with labels >= 0")
    try:
        value = as_float(call(s.clone(), t.clone(), y.clone(), T, a), "kd_loss")
    except LearnerCrash as crash:
        raise Wrong(f"your loss fails on a batch whose unlabelled rows are labelled -100: {_sentence(crash)} Any "
                    f"negative label {advice}") from None
    expected = float(ref.distillation_loss(s, t, y, T, a))
    if not close(value, expected):
        raise Wrong(f"on a batch whose unlabelled rows are labelled -100 your loss is {value:.4f}, expected "
                    f"{expected:.4f}: any negative label {advice}")


# -- q3: gradient accumulation -----------------------------------------------------------


class _CountingSGD(torch.optim.SGD):
    """Plain SGD that counts its steps (to tell 'step once' from 'step every micro-batch')."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def _acc_case():
    g = torch.Generator().manual_seed(6)
    B, D, C = 8, 5, 3
    x = torch.randn(B, D, generator=g)
    t = torch.randn(B, C, generator=g) * 3
    # micro-batches of 2 rows hold 2, 1, 2 and 1 labelled rows: their labelled means weigh rows unequally
    y = torch.tensor([0, 2, 1, -1, 2, 2, -1, 0])
    w, b = torch.randn(C, D, generator=g), torch.randn(C, generator=g)
    return x, t, y, w, b


def _grad(w, b, x, t, y, T, a, hard=None):
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    s = x @ w.T + b
    loss = ref.distillation_loss(s, t, y, T, a) if hard is None else \
        a * ref.kl_divergence(s, t, T) + (1 - a) * hard(s, y)
    gw, gb = torch.autograd.grad(loss, (w, b))
    return torch.cat([gw.flatten(), gb]), float(loss.detach())


class _RowCountingLinear(torch.nn.Linear):
    """A linear student that records how many rows each forward call sees (to tell micro-batches from the batch)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows: list[int] = []

    def forward(self, x):
        self.rows.append(int(x.shape[0]) if x.dim() > 1 else 1)
        return super().forward(x)


def _check_accumulation(call):
    # the defaults first, then other values: a step that drops temperature or alpha passes the first only
    for T, a, K in ((2.0, 0.5, 4), (3.0, 0.7, 2)):
        _check_accumulation_at(call, T, a, K)


def _check_micro_batches(student, optimizer, B, K):
    """The student saw one micro-batch per forward pass, and the optimizer stepped once."""
    rows = student.rows
    if rows and max(rows) > B // K and max(rows) < B and max(rows) == K and len(rows) == -(-B // K):
        raise Wrong(f"your student's forward passes saw {K} rows each, {len(rows)} times: inputs.split({K}) cuts "
                    f"pieces of {K} rows, inputs.chunk({K}) cuts {K} pieces; with micro_batches={K} and a batch of "
                    f"{B}, run the student on {K} micro-batches of {B // K} rows (inputs.chunk(micro_batches))")
    if rows and max(rows) > B // K:
        raise Wrong(f"your student's forward pass saw {max(rows)} rows at once, but with micro_batches={K} "
                    f"and a batch of {B} each forward should see at most {B // K}: run the student on each "
                    "micro-batch in turn (inputs.chunk(micro_batches))" + (", never on the whole batch"
                                                                           if max(rows) == B else ""))
    if optimizer.steps == 0:
        raise Wrong("the student did not move: call optimizer.step() once, after the last micro-batch")
    if optimizer.steps == K:
        raise Wrong(f"you called optimizer.step() after every micro-batch ({K} steps): accumulate the gradients of "
                    "the K micro-batches with backward(), then step once")
    if optimizer.steps != 1:
        raise Wrong(f"you called optimizer.step() {optimizer.steps} times: one step per call, after the last "
                    "micro-batch")


def _check_backwards(backwards: int, K: int) -> None:
    """One backward per micro-batch: one backward over K forwards keeps all K graphs alive."""
    if backwards < K:
        raise Wrong(f"{backwards} backward pass(es) for {K} micro-batches: call backward() on each micro-batch's "
                    "loss in the loop, so that its graph is freed before the next forward. One backward on the sum "
                    "(or on the concatenated logits) keeps all K graphs alive, the memory accumulation saves")


def _check_accumulation_at(call, T, a, K):
    lr = 0.1
    x, t, y, w, b = _acc_case()
    student = _RowCountingLinear(x.shape[1], t.shape[1])
    with torch.no_grad():
        student.weight.copy_(w)
        student.bias.copy_(b)
    stale = 0.25
    for p in student.parameters():  # left over from an earlier step
        p.grad = torch.full_like(p, stale)
    optimizer = _CountingSGD(student.parameters(), lr)
    backwards = []  # a backward pass through the student computes its weight's gradient once
    student.weight.register_hook(lambda grad: backwards.append(1))
    with torch.enable_grad():
        value = as_loss_float(call(student, optimizer, x.clone(), t.clone(), y.clone(), K, T, a),
                              "accumulated_kd_step")
    _check_micro_batches(student, optimizer, len(y), K)
    _check_backwards(len(backwards), K)
    p0 = torch.cat([w.flatten(), b])
    got = torch.cat([student.weight.detach().flatten(), student.bias.detach()])
    g_full, full_loss = _grad(w, b, x, t, y, T, a)
    if not close(got, p0 - lr * g_full, rtol=1e-4, atol=1e-6):
        chunks = list(zip(x.chunk(K), t.chunk(K), y.chunk(K)))
        micro = [_grad(w, b, xi, ti, yi, T, a)[0] for xi, ti, yi in chunks]
        ones = torch.full_like(g_full, stale)
        mean_lab = lambda s, yy: F.cross_entropy(s, yy, ignore_index=-1)  # noqa: E731
        lab = [_grad(w, b, xi, ti, yi, T, a, hard=mean_lab)[0] for xi, ti, yi in chunks]
        ignored = ignored_settings(T, a, (2.0, 0.5), "kd_loss",
                                   lambda T_, a_: [p0 - lr * _grad(w, b, x, t, y, T_, a_)[0]])
        message = diagnose([got], {
            **ignored,
            f"your update is {K}x too large: divide each micro-batch's loss by K (the number of micro-batches) "
            "before backward(), so the K accumulated gradients add up to the big batch's mean":
                lambda: [p0 - lr * K * g_full],
            "your hard term averages over the labelled rows of each micro-batch, so a labelled review weighs more "
            "in a micro-batch with fewer of them: divide its sum by the micro-batch size (as kd_loss does), so "
            "every review weighs 1/B":
                lambda: [p0 - lr * sum(lab) / K],
            "only the last micro-batch reached the update: you zeroed the gradients in every micro-batch. "
            "Zero them once, before the first one":
                lambda: [p0 - lr * micro[-1] / K],
            "only the last micro-batch reached the update (and it is not divided by K): zero the gradients "
            "once, before the first micro-batch":
                lambda: [p0 - lr * micro[-1]],
            "the gradients left over from the previous step leaked into this one: call optimizer.zero_grad() "
            "before the first micro-batch":
                lambda: [p0 - lr * (g_full + ones)],
            f"the gradients left over from the previous step leaked into this one (call optimizer.zero_grad() "
            f"first), and your update is {K}x too large (divide each micro-batch's loss by K)":
                lambda: [p0 - lr * (K * g_full + ones)],
        }, rtol=1e-4, atol=1e-6)
        raise Wrong(message or f"after your step the student differs from one step on the whole batch of "
                    f"{len(y)} rows (K={K} micro-batches of {len(y) // K})")
    if not close(value, full_loss, rtol=1e-4, atol=1e-6):
        if close(value, K * full_loss, rtol=1e-4, atol=1e-6):
            raise Wrong(f"the update is right, but the loss you return is {K}x too large: return the sum of the "
                        "K scaled micro-batch losses, i.e. the big batch's loss")
        raise Wrong(f"the update is right, but you returned {value:.5f}, while the loss of the whole batch is "
                    f"{full_loss:.5f}: return the sum of the K scaled micro-batch losses (as a float)")


# -- q4: reading a T / alpha sweep ----------------------------------------------------------


def _row(T, a, val, ci, test):
    return {"temperature": T, "alpha": a, "val_acc": val, "lead_ci": ci, "test_acc": test}


def _sweeps():
    """(sweep, default) pairs. ``lead_ci``: the half-width of the paired 95 % interval of a row's val_acc minus the
    default's, on the same validation reviews (0 for the default's row; None where the default is not swept).
    The first three tell the rule from the obvious wrong ones, the last three from the subtle ones (a fixed
    threshold, a hard-coded default)."""
    return [
        # the best on validation leads the default by less than the interval of that lead: keep the default
        ([_row(1.0, 0.5, 0.842, 0.017, 0.861), _row(2.0, 0.5, 0.851, 0.0, 0.848),
          _row(2.0, 0.9, 0.856, 0.019, 0.850), _row(4.0, 0.5, 0.848, 0.016, 0.852)], (2.0, 0.5)),
        # a clear winner on validation (ahead by more than the interval of its lead)
        ([_row(1.0, 0.9, 0.902, 0.015, 0.871), _row(2.0, 0.5, 0.861, 0.0, 0.866),
          _row(4.0, 0.5, 0.874, 0.014, 0.880), _row(4.0, 0.9, 0.866, 0.012, 0.866)], (2.0, 0.5)),
        # no default in the sweep: no lead to measure, the best on validation
        ([_row(1.0, 0.7, 0.781, None, 0.800), _row(3.0, 0.7, 0.812, None, 0.790),
          _row(5.0, 0.7, 0.798, None, 0.805)], (2.0, 0.5)),
        # a lead of 0.015, more than the best's lead_ci (0.010): the best
        ([_row(1.0, 0.5, 0.846, 0.018, 0.858), _row(2.0, 0.5, 0.850, 0.0, 0.846),
          _row(4.0, 0.7, 0.865, 0.010, 0.851), _row(5.0, 0.5, 0.840, 0.020, 0.835)], (2.0, 0.5)),
        # a lead of 0.012: more than a fixed 0.01, within the best's lead_ci (0.015): keep the default
        ([_row(1.0, 0.9, 0.820, 0.015, 0.790), _row(2.0, 0.5, 0.808, 0.0, 0.800),
          _row(3.0, 0.7, 0.801, 0.016, 0.812), _row(4.0, 0.5, 0.795, 0.016, 0.790)], (2.0, 0.5)),
        # a lead exactly equal to its interval (0.125, held exactly): "no larger than" keeps the default
        ([_row(1.0, 0.5, 0.875, 0.125, 0.8), _row(2.0, 0.5, 0.75, 0.0, 0.85)], (2.0, 0.5)),
        # another default: (1.0, 0.5) leads (4.0, 0.9) by 0.008, within its lead_ci (0.013); (2.0, 0.5) by 0.020
        ([_row(1.0, 0.5, 0.870, 0.013, 0.855), _row(2.0, 0.5, 0.850, 0.014, 0.848),
          _row(4.0, 0.9, 0.862, 0.0, 0.852), _row(5.0, 0.7, 0.845, 0.015, 0.859)], (4.0, 0.9)),
    ]


def _choose(sweep, default=(2.0, 0.5)):
    """The rule: the best on validation, unless the default is swept and the best's lead over it is no larger than
    the interval of that lead (its lead_ci)."""
    best = max(sweep, key=lambda r: r["val_acc"])
    for r in sweep:
        if (r["temperature"], r["alpha"]) == tuple(default) and best["val_acc"] - r["val_acc"] <= best["lead_ci"]:
            return tuple(default)
    return best["temperature"], best["alpha"]


def _as_pair(value) -> tuple[float, float]:
    """The learner's (temperature, alpha) as two floats, or :class:`Wrong` naming what it returned."""
    want = "a pair (temperature, alpha)"
    if value is None or isinstance(value, (str, bytes, dict, set)) or not hasattr(value, "__len__"):
        raise wrong_return(value, want, "choose_setting")
    try:
        n = len(value)
    except TypeError:  # a 0-d tensor or array
        n = None
    if n != 2:
        raise wrong_return(value, want, "choose_setting")
    try:
        temperature, alpha = value[0], value[1]
    except (TypeError, KeyError, IndexError):
        raise wrong_return(value, want, "choose_setting") from None
    return as_float(temperature, "the temperature you returned"), as_float(alpha, "the alpha you returned")


def _call_sweep(call, rows, default):
    """The learner's choice on ``rows``, with the two crashes this exercise's rows explain named."""
    no_default = all(r["lead_ci"] is None for r in rows)  # read before the learner's code may change the rows
    try:
        return call(rows, default)
    except LearnerCrash as crash:
        if isinstance(crash.exc, KeyError) and crash.exc.args == ("val_ci",):
            raise Wrong("the rows hold no val_ci any more: each holds lead_ci, the paired interval of its lead over "
                        "the default (one accuracy's interval does not measure a difference): compare the best's "
                        "lead with the best's lead_ci") from None
        if isinstance(crash.exc, TypeError) and no_default:
            raise Wrong(f"your function raised {crash} on a sweep without the default, where every lead_ci is None "
                        "(there is no lead to measure): check that the default is in the sweep first") from None
        raise


def _check_sweep(call):
    for sweep, default in _sweeps():
        rows = [dict(r) for r in sweep]
        got = _call_sweep(call, rows, default)
        if rows != sweep and len(rows) == len(sweep) and all(r in rows for r in sweep):
            raise Wrong("your function reordered the caller's list (sweep.sort(...) sorts it in place): use "
                        "sorted(sweep, ...) or max(sweep, ...), which leave it as it was")
        if rows != sweep:
            raise Wrong("your function changed the sweep's rows: read them, do not modify them")
        got = _as_pair(got)
        expected = _choose(sweep, default)
        if got == expected:
            continue
        key = lambda r: (r["temperature"], r["alpha"])  # noqa: E731
        best = max(sweep, key=lambda r: r["val_acc"])
        on_test = key(max(sweep, key=lambda r: r["test_acc"]))
        on_val = key(best)
        base = next((r for r in sweep if key(r) == tuple(default)), None)
        lead = best["val_acc"] - base["val_acc"] if base is not None else None
        if tuple(default) != (2.0, 0.5) and got == (2.0, 0.5):
            raise Wrong(f"you returned (2.0, 0.5), but this call passed default={tuple(default)}: use the `default` "
                        "argument, not a fixed pair")
        if tuple(default) != (2.0, 0.5) and got == _choose(sweep, (2.0, 0.5)):
            raise Wrong(f"you compared the best setting with (2.0, 0.5), but this call passed "
                        f"default={tuple(default)}: use the `default` argument, not a fixed pair")
        if got == on_test:
            raise Wrong("you chose on the test accuracy: the test set is for the final report only; choosing on it "
                        "makes the reported number optimistic. Choose on validation")
        if base is None and got == tuple(default):
            raise Wrong(f"the default {tuple(default)} is not in this sweep, so there is nothing to keep: return the "
                        "best setting on validation")
        if got == on_val:
            raise Wrong(f"you took the best validation accuracy, {on_val}, but it leads the default {tuple(default)} "
                        f"by {lead:.3f}, no more than the interval of that lead (lead_ci = {best['lead_ci']:.3f}): "
                        "the sweep cannot tell them apart, so keep the default (the threshold is the best setting's "
                        "lead_ci, not a fixed number)")
        if got[0] == max(r["temperature"] for r in sweep):
            raise Wrong("you chose the largest temperature: a larger T is not better in itself (notebook 03 sets "
                        "T = 2 and 4 against T = 1 on one run of one task). Choose on validation accuracy")
        if got == tuple(default):
            raise Wrong(f"you kept the default, but {on_val} leads it on validation by {lead:.3f}, more than the "
                        f"interval of that lead (lead_ci = {best['lead_ci']:.3f}): the difference is there, take it")
        raise Wrong(f"you chose {got}, expected {expected} (the best on validation, or the default when the best "
                    "leads it by no more than the best's lead_ci)")


q1 = Exercise(
    "ex03.q1", "Hinton's soft loss with T^2 and batchmean", "soft_kd_loss", _check_soft,
    hints=(
        "The soft loss measures how far the student's softened distribution is from the teacher's, KL(teacher"
        ' || student), both taken at temperature T, and averaged over the examples of the batch. Softening '
        'shrinks the gradients by 1/T^2, so the loss is scaled back up by T^2. The teacher is a fixed target.',
        "F.kl_div(input, target, reduction=...) expects input = the student's log-probabilities "
        "(F.log_softmax(student_logits / T, dim=-1)) and target = the teacher's probabilities "
        "(F.softmax(teacher_logits / T, dim=-1)). Its reduction='batchmean' divides by the batch size; 'mean'"
        ' divides by batch x classes, which is not a mean over examples. .detach() keeps the gradient away '
        'from the teacher.',
        "log_q = log_softmax of the student's logits divided by T; p = softmax of the detached teacher's "
        "logits divided by T; the loss is kl_div(log_q, p) with reduction 'batchmean' (not 'mean' or 'sum'), "
        'multiplied by T ** 2 (not T). Return the tensor, without .item().',
    ),
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
    hints=(
        "The full loss mixes the soft term (the teacher's knowledge) and the hard term (the true labels) with"
        ' a weight alpha on the soft term. Unlabelled rows can only teach through the soft term, and every '
        'row of the batch weighs the same in both terms.',
        "Reuse your soft_kd_loss. labelled = labels >= 0 marks the labelled rows (any negative label is "
        "unlabelled; ignore_index ignores one value only); F.cross_entropy(student_logits[labelled], "
        "labels[labelled], reduction='sum') adds their cross-entropy (0 when there are none); divide by "
        'len(labels), the batch size. The hard term uses the raw logits (T = 1).',
        'the soft term is your soft_kd_loss at this temperature; hard = cross-entropy at T = 1 of the rows '
        'with labels >= 0, summed and divided by the whole batch size (not by the number of labelled rows, whose '
        'mean is nan on an all-unlabelled batch); return alpha times soft plus (1 - alpha) times hard.',
    ),
    solution='''
def kd_loss(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    """alpha * T^2 * KL + (1 - alpha) * CE, both averaged over the B rows (negative label = unlabelled: CE adds 0)."""
    ### BEGIN SOLUTION
    soft = soft_kd_loss(student_logits, teacher_logits, temperature)
    labelled = labels >= 0  # -1 here, -100 in transformers: any negative label marks an unlabelled review
    hard = F.cross_entropy(student_logits[labelled], labels[labelled], reduction="sum") / len(labels)
    return alpha * soft + (1 - alpha) * hard
    ### END SOLUTION
''',
    success="Correct! Unlabelled transfer reviews feed the soft term only, and every review weighs 1/B.",
)

q3 = Exercise(
    "ex03.q3", "Gradient accumulation: K micro-batches, one step", "accumulated_kd_step", _check_accumulation,
    hints=(
        "Gradients add up across backward() calls until they are zeroed. A step on K micro-batches matches one "
        "step on the whole batch when the K accumulated gradients sum to the gradient of the big batch's loss, "
        "which is a mean over all B rows.",
        "tensor.chunk(K) splits the rows into K equal micro-batches (apply it to inputs, teacher_logits and "
        "labels alike); optimizer.zero_grad(), loss.backward() and optimizer.step() are the three calls; reuse "
        "your kd_loss for each micro-batch.",
        "Zero the gradients once; for each of the K micro-batches compute kd_loss on the student's logits, "
        "divide it by K, call backward and add its .item() to a running total; after the loop, step once and "
        "return the total.",
    ),
    solution='''
def accumulated_kd_step(student, optimizer, inputs, teacher_logits, labels, micro_batches,
                        temperature=2.0, alpha=0.5):
    """One optimizer step on the batch split into `micro_batches` equal parts; returns the batch's loss."""
    ### BEGIN SOLUTION
    optimizer.zero_grad()
    total = 0.0
    parts = zip(inputs.chunk(micro_batches), teacher_logits.chunk(micro_batches), labels.chunk(micro_batches))
    for x, t, y in parts:
        loss = kd_loss(student(x), t, y, temperature, alpha) / micro_batches
        loss.backward()
        total += loss.item()
    optimizer.step()
    return total
    ### END SOLUTION
''',
    success="Correct! K micro-batches, one step: the same update as the big batch, in 1/K of the memory.",
)

q4 = Exercise(
    "ex03.q4", "Reading a T / alpha sweep", "choose_setting", _check_sweep,
    hints=(
        "Three data splits, three jobs: train on train, choose on validation, report on test (a choice made on "
        "the test set makes the reported score optimistic). A lead smaller than the uncertainty of that lead "
        "is not evidence, so it is no reason to move off a well-tried default. The uncertainty of a difference "
        "measured on the same reviews is its own paired interval (notebook 05), not either accuracy's.",
        "max(sweep, key=lambda r: r['val_acc']) finds the best row on validation; its lead_ci is the half-width "
        "of the 95 % interval of its lead over the default (None in every row when the default is not in the "
        "sweep: look for the default first); compare (r['temperature'], r['alpha']) with the default pair.",
        "Find the best row by validation accuracy (never look at test_acc, and not at the temperature); if "
        "the default's row is in the sweep and the best's val_acc minus the default's is at most the best's "
        "lead_ci, return the default pair; otherwise return the best row's (temperature, alpha).",
    ),
    solution='''
def choose_setting(sweep, default=(2.0, 0.5)):
    """The (temperature, alpha) to report: chosen on validation, keeping the default unless clearly beaten."""
    ### BEGIN SOLUTION
    best = max(sweep, key=lambda r: r["val_acc"])
    for r in sweep:
        if (r["temperature"], r["alpha"]) == tuple(default) and best["val_acc"] - r["val_acc"] <= best["lead_ci"]:
            return tuple(default)
    return best["temperature"], best["alpha"]
    ### END SOLUTION
''',
    success="Correct! Chosen on validation, and the default kept unless the evidence is clear.",
)

__all__ = ["q1", "q2", "q3", "q4"]
