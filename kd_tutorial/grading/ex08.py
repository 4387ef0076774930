"""Exercises for notebook 08 (KD in practice): a Trainer's ``compute_loss`` that is exact under gradient accumulation.

The check plays the Trainer: it calls the learner's function once per micro-batch with
``num_items_in_batch`` = the rows of the whole optimizer step, adds up the values and the
gradients, and compares them with :func:`kd_tutorial.losses.distillation_loss` of the step as
one batch. The diagnoses compare each micro-batch's value with known-wrong variants.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import losses as ref
from .core import Exercise, LearnerCrash, Wrong, as_float, close, diagnose, ignored_settings, mismatch, reaches

GRADIENT_ACCUMULATION_STEPS = 4  # K: the micro-batches of every step the check plays (the notebook shows it too)
K = GRADIENT_ACCUMULATION_STEPS

SHORTCUT = '''
def shortcut_compute_loss(student_logits, teacher_logits, labels, num_items_in_batch, temperature=2.0, alpha=0.5):
    loss = distillation_loss(student_logits, teacher_logits, labels, temperature, alpha)  # this micro-batch's mean
    return loss / GRADIENT_ACCUMULATION_STEPS
'''.strip("\n")

# the micro-batches of two optimizer steps (labels; -1 = unlabelled): the first ends an epoch with a short
# micro-batch, the second has equal micro-batches, one of them without a single label
STEPS = [
    (3, 2.0, 0.5, [[0, 2, 1, 1, 0, 2, 2, 1], [1, -1, 0, -1, -1, 2, 0, -1], [-1, -1, -1, -1, -1, -1, 2, 0],
                   [1, -1, 2]]),
    (2, 3.0, 0.7, [[1, 0, -1, 1, 0], [-1, -1, -1, -1, -1], [0, 1, 1, -1, -1], [1, 1, 0, 0, -1]]),
]


def _steps():
    """[(micro-batches [(student logits, teacher logits, labels)], T, alpha)] for every step of :data:`STEPS`."""
    g = torch.Generator().manual_seed(8)
    out = []
    for classes, T, alpha, labels in STEPS:
        micro = [(torch.randn(len(y), classes, generator=g) * 2, torch.randn(len(y), classes, generator=g) * 3,
                  torch.tensor(y)) for y in labels]
        out.append((micro, T, alpha))
    return out


def _sizes(step) -> str:
    rows = [len(y) for _, _, y in step[0]]
    return f"{', '.join(map(str, rows[:-1]))} and {rows[-1]} rows"


def _labelled_mean(s, t, y, T, a):
    """The hard term averaged over the labelled rows only (transformers' -100 rule; 0 when none is labelled)."""
    m = y != ref.IGNORE_LABEL
    hard = F.cross_entropy(s[m], y[m]) if bool(m.any()) else s.sum() * 0
    return a * ref.kl_divergence(s, t, T) + (1 - a) * hard


def _call_steps(call, steps):
    """Call ``compute_loss`` on every micro-batch, as the Trainer does: per step, [(loss, student, teacher)]."""
    out = []
    for micro, T, a in steps:
        n = torch.tensor(sum(len(y) for _, _, y in micro))  # the Trainer passes a 0-d tensor
        calls = []
        for s, t, y in micro:
            s, t = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
            try:
                with torch.enable_grad():
                    loss = call(s, t, y.clone(), n.clone(), T, a)
            except LearnerCrash as crash:
                if bool((y == ref.IGNORE_LABEL).any()):
                    what = str(crash).rstrip(".")
                    raise Wrong(f"your function fails on a micro-batch with unlabelled rows (label -1): {what}. "
                                "Unlabelled rows add 0 to the hard term (F.cross_entropy ignores -100 by default, "
                                "not -1); distillation_loss handles them") from None
                raise
            calls.append((loss, s, t))
        out.append(calls)
    return out


def _variants(steps):
    """Known-wrong values of every micro-batch (flattened in the order of the steps), by message."""
    flat = [(s, t, y, sum(len(x) for _, _, x in micro), T, a) for micro, T, a in steps for s, t, y in micro]
    dl = ref.distillation_loss
    V = lambda f: (lambda: [float(f(s, t, y, n, T, a)) for s, t, y, n, T, a in flat])  # noqa: E731
    first = steps[0]
    short, full = len(first[0][-1][2]), len(first[0][0][2])
    n0 = sum(len(y) for _, _, y in first[0])
    return {
        f"you returned the micro-batch's mean divided by K = {K} (the shortcut): in a step of {_sizes(first)}, a "
        f"review of the short micro-batch then weighs 1/({K} x {short}) = 1/{K * short} and one of a full "
        f"micro-batch 1/{K * full}, instead of 1/{n0} each. Scale the mean by B_k / num_items_in_batch instead":
            V(lambda s, t, y, n, T, a: dl(s, t, y, T, a) / K),
        f"you returned each micro-batch's plain mean: the Trainer adds the K = {K} values of a step without "
        f"dividing them (your loss is declared normalised for accumulation), so the step's loss and gradient are "
        f"about {K} times too big. Multiply the mean by B_k / num_items_in_batch":
            V(lambda s, t, y, n, T, a: dl(s, t, y, T, a)),
        "you divided the micro-batch's mean by num_items_in_batch, but the mean has already divided by its own "
        "B_k rows: the micro-batch's share is (sum over its rows) / N = mean x B_k / N":
            V(lambda s, t, y, n, T, a: dl(s, t, y, T, a) / n),
        "you returned the sum over the micro-batch's rows: divide it by num_items_in_batch, the rows of the "
        "whole step":
            V(lambda s, t, y, n, T, a: dl(s, t, y, T, a) * len(y)),
        "the ratio is upside down: the micro-batch's share of the step is B_k / N, not N / B_k":
            V(lambda s, t, y, n, T, a: dl(s, t, y, T, a) * n / len(y)),
        "you counted only the labelled rows of the micro-batch as B_k: every review weighs 1/N in the course's "
        "loss, labelled or not, so B_k is all its rows (len(labels))":
            V(lambda s, t, y, n, T, a: dl(s, t, y, T, a) * int((y != ref.IGNORE_LABEL).sum()) / n),
        "you averaged the hard term over the labelled rows of each micro-batch (transformers' -100 rule): then a "
        "labelled review weighs more when fewer others in its micro-batch have a label. Sum the cross-entropy "
        "over the labelled rows and divide by all the rows, as distillation_loss does":
            V(lambda s, t, y, n, T, a: _labelled_mean(s, t, y, T, a) * len(y) / n),
        f"two shortcuts at once: the micro-batch's mean divided by K = {K}, and a hard term averaged over its "
        "labelled rows only. Use distillation_loss (every row weighs 1/B_k) scaled by B_k / num_items_in_batch":
            V(lambda s, t, y, n, T, a: _labelled_mean(s, t, y, T, a) / K),
        "your loss has no hard-label term: add (1 - alpha) x the cross-entropy with the labels "
        "(distillation_loss has both terms)":
            V(lambda s, t, y, n, T, a: a * ref.kl_divergence(s, t, T) * len(y) / n),
        f"your values are K = {K} times too big: the Trainer does not divide a loss declared normalised for "
        f"accumulation by K, so B_k / num_items_in_batch is the whole scale: drop the x {K}":
            V(lambda s, t, y, n, T, a: dl(s, t, y, T, a) * len(y) / n * K),
        "alpha weights the soft (teacher) term: distillation_loss(..., alpha) gives alpha x soft + (1 - alpha) x "
        "hard, so pass alpha itself, not 1 - alpha":
            V(lambda s, t, y, n, T, a: dl(s, t, y, T, 1 - a) * len(y) / n),
    }


def _check_values(calls, steps):
    got = [as_float(loss, "compute_loss") for step in calls for loss, _, _ in step]
    for value, (s, t, y) in zip(got, (m for micro, _, _ in steps for m in micro)):
        if value != value:  # nan
            if not bool((y != ref.IGNORE_LABEL).any()):
                raise Wrong("your loss is nan on a micro-batch whose reviews are all unlabelled (label -1): a hard "
                            "term averaged over the labelled rows divides 0 by 0 there. Sum the cross-entropy over "
                            "the labelled rows and divide by all the rows, as distillation_loss does")
            raise Wrong(f"your loss is nan on a micro-batch of {len(y)} reviews, labels {y.tolist()}")
    expected = [float(ref.distillation_loss(s, t, y, T, a) * len(y) / sum(len(x) for _, _, x in micro))
                for micro, T, a in steps for s, t, y in micro]
    if all(close(g, e) for g, e in zip(got, expected)):
        return
    message = diagnose(got, {**_ignored(steps), **_variants(steps)})
    if message:
        raise Wrong(message)
    i = mismatch(got, expected)  # quote a micro-batch that differs, not the first (right at the default T, alpha)
    where = [(step, k) for step in steps for k in range(len(step[0]))]
    (micro, T, a), k = where[i]
    n = sum(len(y) for _, _, y in micro)
    raise Wrong(f"in a step of {_sizes((micro, T, a))} (temperature={T:g}, alpha={a:g}), micro-batch {k + 1} returned "
                f"{got[i]:.5f}; its share of the step's loss is {expected[i]:.5f} "
                f"(its mean x {len(micro[k][2])} / {n})")


def _ignored(steps):
    """Diagnoses for a loss computed at distillation_loss's defaults (T = 2, alpha = 0.5), whatever it was given:
    the first step uses those values, so it only shows in the second."""
    last_T, last_a = steps[-1][1], steps[-1][2]

    def values(T_, a_):
        return [float(ref.distillation_loss(s, t, y, T if T_ == last_T else 2.0, a if a_ == last_a else 0.5)
                      * len(y) / sum(len(x) for _, _, x in micro)) for micro, T, a in steps for s, t, y in micro]
    return ignored_settings(last_T, last_a, (2.0, 0.5), "distillation_loss", values, subject="your compute_loss")


def _check_gradients(calls, steps):
    """The micro-batches' gradients must add up to the gradient of the whole step's loss, and miss the teacher."""
    for step_calls, (micro, T, a) in zip(calls, steps):
        for loss, s, t in step_calls:
            if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
                raise Wrong("your loss carries no gradient: return a tensor (no .item(), no .detach(), no "
                            "torch.no_grad()); the Trainer calls backward() on it")
            try:
                loss.backward()
            except Exception as exc:  # noqa: BLE001 - the learner's graph (a custom backward, a hook) failed
                raise LearnerCrash(exc) from None
            if reaches(t.grad):
                raise Wrong("a gradient reaches teacher_logits, so it reaches the teacher, which is frozen: use "
                            "teacher_logits.detach() (distillation_loss does)")
            if s.grad is None:
                raise Wrong("no gradient reaches student_logits: the loss you return must be computed from them")
        got = torch.cat([s.grad for _, s, _ in step_calls])
        whole = torch.cat([s for s, _, _ in micro]).requires_grad_(True)
        loss = ref.distillation_loss(whole, torch.cat([t for _, t, _ in micro]), torch.cat([y for _, _, y in micro]),
                                     T, a)
        expected = torch.autograd.grad(loss, whole)[0]
        if not close(got, expected):
            raise Wrong(f"your values are right, but the micro-batches' gradients do not add up to the gradient "
                        f"of one batch of {len(whole)} rows: is part of your loss detached?")


def _check_evaluation(call):
    """``num_items_in_batch=None`` (evaluation): the plain batch mean."""
    g = torch.Generator().manual_seed(80)
    s, t, y, T, a = torch.randn(6, 3, generator=g) * 2, torch.randn(6, 3, generator=g) * 3, \
        torch.tensor([2, -1, 0, 1, -1, 1]), 2.0, 0.5
    try:
        value = as_float(call(s.clone(), t.clone(), y.clone(), None, T, a), "compute_loss")
    except LearnerCrash as crash:
        raise Wrong(f"with num_items_in_batch=None (evaluation: the Trainer passes no step size) your function "
                    f"raised {crash}. Return the batch's plain mean then") from None
    expected = float(ref.distillation_loss(s, t, y, T, a))
    if close(value, expected):
        return
    if close(value, expected / K):
        raise Wrong(f"with num_items_in_batch=None (evaluation) you still divided by K = {K}: there is no "
                    "accumulated step then, so return the batch's plain mean")
    raise Wrong(f"with num_items_in_batch=None (evaluation) your loss is {value:.5f}; the batch's plain mean, "
                f"distillation_loss(...), is {expected:.5f}")


def _check_compute_loss(call):
    steps = _steps()
    calls = _call_steps(call, steps)
    _check_values(calls, steps)
    _check_gradients(calls, steps)
    _check_evaluation(call)


q1 = Exercise(
    "ex08.q1", "compute_loss under gradient accumulation", "compute_loss", _check_compute_loss,
    hints=(
        "One optimizer step reads K micro-batches and adds up their gradients, and it should be the step of one "
        "batch of all N rows, whose loss is (1 / N) x the sum of the per-review losses. So each micro-batch must "
        "contribute (1 / N) x the sum over its own rows: its share, which only N, the rows of the whole step, "
        "can give. In evaluation there is no step: the batch mean.",
        "distillation_loss(student_logits, teacher_logits, labels, temperature, alpha) is the micro-batch's mean "
        "over its B_k rows, unlabelled rows included (label -1: no hard term, still 1/B_k); B_k is "
        "student_logits.shape[0] or len(labels); num_items_in_batch is N (a 0-d tensor), or None in evaluation.",
        "Compute the micro-batch's mean with distillation_loss; when num_items_in_batch is None return it as it "
        "is; otherwise multiply it by the micro-batch's number of rows and divide by num_items_in_batch (no "
        "division by the accumulation steps anywhere).",
    ),
    solution='''
def compute_loss(student_logits, teacher_logits, labels, num_items_in_batch, temperature=2.0, alpha=0.5):
    """This micro-batch's share of the step's loss: (1 / N) x the sum of its rows' losses; None: the batch mean."""
    ### BEGIN SOLUTION
    loss = distillation_loss(student_logits, teacher_logits, labels, temperature, alpha)  # mean over its B_k rows
    if num_items_in_batch is None:          # evaluation: no accumulated step
        return loss
    return loss * student_logits.shape[0] / num_items_in_batch   # sum over its rows / N
    ### END SOLUTION
''',
    success="Correct! Every review of a step weighs 1/N, whatever the size of its micro-batch and whether it has a "
            "label.",
)

__all__ = ["q1", "GRADIENT_ACCUMULATION_STEPS", "SHORTCUT"]
