"""Metrics and timing: accuracy, agreement, calibration, size, latency and throughput.

Every model in a comparison is measured here, in one run, on one device, on the
same reviews: numbers from different machines are never mixed.
"""
from __future__ import annotations

import math
import numbers
import statistics
import time

import numpy as np
import torch

from .bars import progress_bar
from .data import batch_groups, collate, make_batches, prefetch
from .device import (autocast, autocast_dtype, check_device, device_type, pad_multiple, pick_device,
                     resolve_precision, slow_first_calls, synchronize)
from .errors import UserError
from .features import forward_features
from .models import check_rows, count_parameters, model_size_mb

ECE_BINS = 10


@torch.no_grad()
def predict_logits(model, encoded, *, batch_size: int = 64, device: str | None = None, precision: str = "auto",
                   progress: bool = False, desc: str = "predict", cls_states: bool = False, values: bool = False,
                   on_batch=None):
    """Logits ``[N, C]`` (float32, on the CPU) for every row of ``encoded``, in row order.

    With ``cls_states=True``, returns ``(logits, cls)`` where ``cls[n, k]`` is row ``n``'s
    [CLS] state after layer ``k`` (``k = 0``: the embeddings), ``[N, layers + 1, H]`` in
    float16: what Patient KD's [CLS] term needs, small enough to cache.
    With ``on_batch``, each batch's rows and forward pass (:class:`kd_tutorial.features.Features`: hidden
    states with ``cls_states``, value vectors with ``values``) also go to ``on_batch(index, features)``:
    how the teacher's per-token layers are cached in the same pass as its logits.
    """
    device = check_device(device) if device else pick_device()  # "gpu": one line naming this machine's devices
    check_rows(model, encoded, desc, labels=False)  # a row past the positions: one line, not a shape error in BERT
    was_training = model.training
    model.eval().to(device)
    dtype, kind = autocast_dtype(device, precision), device_type(device)
    groups = batch_groups(encoded, batch_size, shuffle=False, group_by_length=True)
    multiple, longest = pad_multiple(device), max(encoded.lengths, default=0)

    def build(group):
        return collate(encoded, group, pin=kind == "cuda", multiple=multiple, limit=longest)
    out = cls = None  # filled on the device and copied to the host once: no wait per batch
    try:
        for batch in progress_bar(prefetch(build, groups), total=len(groups), desc=desc, disable=not progress,
                                  leave=False):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast(kind, dtype):
                result = forward_features(model, batch["input_ids"], batch["attention_mask"], hidden=cls_states,
                                          values=values)
            if on_batch is not None:
                on_batch(batch["index"], result)
            logits = result.logits.float()
            if out is None:
                out = torch.empty(len(encoded), logits.shape[-1], device=device)
            out[batch["index"]] = logits
            if cls_states:
                states = torch.stack([h[:, 0] for h in result.hidden], 1).to(torch.float16)
                if cls is None:
                    cls = torch.empty(len(encoded), *states.shape[1:], dtype=torch.float16, device=device)
                cls[batch["index"]] = states
    finally:  # an error or Ctrl-C leaves the model in the mode it came in
        model.train(was_training)
    if out is None:
        raise ValueError(f"{desc}: no reviews to predict (the split {getattr(encoded, 'name', '')!r} is empty)")
    out, cls = out.cpu(), None if cls is None else cls.cpu()
    lower = str(dtype).removeprefix("torch.")
    check_finite(out, f"{desc}: the model's logits", fix="its weights hold NaN or infinity: retrain it" if dtype is None
                 else f"its weights hold NaN or infinity, or {lower} overflowed: predict in fp32 (precision='fp32')")
    return (out, cls) if cls_states else out


class NonFiniteLogitsError(UserError, ValueError):
    """A model's logits hold NaN or infinity: a broken checkpoint, or an overflow in lower precision."""


FINITE_FIX = ("the model that gave them has NaN weights, or overflowed in fp16 or bf16: retrain it, or predict in "
              "fp32 (predict_logits(..., precision='fp32'))")


def check_finite(logits: torch.Tensor, what: str = "logits", fix: str = FINITE_FIX) -> torch.Tensor:
    """``logits`` unchanged, or a :class:`NonFiniteLogitsError` naming how many rows hold NaN or infinity:
    ``argmax`` would read a NaN as the largest value, and every score would count such a row as an answer."""
    finite = torch.isfinite(logits)
    bad = ~(finite.flatten(1).all(-1) if logits.dim() > 1 else finite)
    if bad.any():
        raise NonFiniteLogitsError(f"{what} hold NaN or infinity on {int(bad.sum()):,} of {len(logits):,} rows: {fix}")
    return logits


def _one_label_per_row(logits: torch.Tensor, labels, what: str) -> torch.Tensor:
    """``labels`` as a tensor, refused in one line unless there is one per row of ``logits`` (torch would broadcast
    one row against them all, or fail on a mask's shape), nor unless they are class ids."""
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as err:  # text labels: "too many dimensions 'str'"
        raise TypeError(f"{what} takes labels as class ids (0 to C - 1, -1 unlabelled), not {type(labels).__name__} "
                        f"that torch cannot read ({err}): map the class names to their ids first") from None
    if labels.is_floating_point() and not bool((labels == labels.round()).all()):  # 0.0 and 1.0 are ids still
        raise TypeError(f"{what} takes labels as class ids (0 to C - 1, -1 unlabelled), not fractions such as "
                        f"{labels[labels != labels.round()][0].item():g}: give the labels, not probabilities")
    labels = labels.long() if labels.is_floating_point() or labels.dtype == torch.bool else labels
    if labels.dim() != 1 or len(labels) != len(logits):
        raise ValueError(f"{what} needs one label per row of logits, got {len(logits):,} rows and "
                         f"{len(labels) if labels.dim() == 1 else tuple(labels.shape)} labels: pass the labels of "
                         "the split the logits were predicted on")
    return labels


def accuracy(logits: torch.Tensor, labels) -> float:
    """Fraction of rows whose arg-max class equals the label (rows labelled -1 are skipped)."""
    check_finite(logits)
    labels = _one_label_per_row(logits, labels, "accuracy")
    mask = labels >= 0
    return float((logits.argmax(-1)[mask] == labels[mask]).float().mean())


def accuracy_interval(correct: int, n: int, z: float = statistics.NormalDist().inv_cdf(0.975)) -> tuple[float, float]:
    """Wilson's 95 % interval for an accuracy of ``correct`` out of ``n`` reviews (``z`` = 1.95996...):
    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``, with ``p = correct / n``; it stays within [0, 1]."""
    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"accuracy_interval needs 0 <= correct <= n and n >= 1, got {correct} of {n}")
    p, zz = correct / n, z * z
    centre, half = p + zz / (2 * n), z * math.sqrt(p * (1 - p) / n + zz / (4 * n * n))
    return max(0.0, (centre - half) / (1 + zz / n)), min(1.0, (centre + half) / (1 + zz / n))


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Fraction of rows on which two models predict the same class (e.g. student and teacher)."""
    check_finite(logits_a), check_finite(logits_b)
    if len(logits_a) != len(logits_b):
        raise ValueError(f"agreement needs both models' logits on the same reviews, got {len(logits_a):,} vs "
                         f"{len(logits_b):,} rows: predict both on the same split")
    return float((logits_a.argmax(-1) == logits_b.argmax(-1)).float().mean())


def _labelled(logits: torch.Tensor, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows with a label: those labelled -1 (unlabelled, as transfer reviews) are left out, as in accuracy."""
    labels = _one_label_per_row(logits, labels, "calibration")
    mask = labels >= 0
    return check_finite(logits)[mask], labels[mask]


def expected_calibration_error(logits: torch.Tensor, labels, n_bins: int = ECE_BINS) -> float:
    """ECE with ``n_bins`` equal-width confidence bins: ``sum_b |B_b|/N * |acc(B_b) - conf(B_b)|``, over the
    labelled rows (a row labelled -1 is left out, as :func:`accuracy` leaves it out)."""
    _check_bins(n_bins)
    logits, labels = _labelled(logits, labels)
    if not len(labels):
        return float("nan")  # no labelled row: nothing to be calibrated about (accuracy is nan too)
    probs = logits.float().softmax(-1)
    conf, pred = probs.max(-1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return float(ece)


def reliability_curve(logits: torch.Tensor, labels, n_bins: int = ECE_BINS) -> dict:
    """Per-bin confidence, accuracy and count, for a reliability diagram (labelled rows only, as the ECE)."""
    _check_bins(n_bins)
    logits, labels = _labelled(logits, labels)
    conf, pred = logits.float().softmax(-1).max(-1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    rows = {"confidence": [], "accuracy": [], "count": [], "edges": edges.tolist()}
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        n = int(in_bin.sum())
        rows["count"].append(n)
        rows["confidence"].append(float(conf[in_bin].mean()) if n else float("nan"))
        rows["accuracy"].append(float(correct[in_bin].mean()) if n else float("nan"))
    return rows


def _autocast(device: str, precision: str):
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    return autocast(device, autocast_dtype(device, precision))


@torch.no_grad()
def latency(model, encoded, *, device: str = "cpu", n: int = 30, warmup: int = 5, repeats: int = 3,
            precision: str = "auto") -> dict:
    """Wall time in ms of one review at batch size 1: ``p50`` and its interquartile range ``q1``-``q3``.

    ``repeats`` passes over the same ``n`` reviews (after ``warmup`` untimed calls on
    other reviews, fewer when the split is small, and on a GPU one untimed pass over the
    ``n``: :func:`kd_tutorial.device.slow_first_calls`), so the spread covers both the
    reviews' lengths and the machine's noise. The precision is the one
    :func:`throughput` and training use (``"auto"``).
    """
    model.eval().to(device)
    timed = _warmed_up([model], encoded, n, warmup, device, precision)
    times = [_forward_ms(model, batch, device, precision) for _ in range(repeats) for batch in timed]
    q1, p50, q3 = quartiles(times)
    return {"p50": p50, "q1": q1, "q3": q3, "samples": times}


def _warmed_up(models: list, encoded, n: int, warmup: int, device: str, precision: str) -> list[dict]:
    """The ``n`` reviews :func:`latency` times (batches of one, drawn with seed 0), once each model has made
    ``warmup`` untimed calls on other reviews (fewer when the split is small) and, on a GPU, one untimed pass over
    the ``n`` (:func:`kd_tutorial.device.slow_first_calls`)."""
    batches = make_batches(encoded, 1, shuffle=True, group_by_length=False, seed=0)[: n + warmup]
    if not batches:
        raise ValueError("latency needs at least one review")
    warm = min(warmup, len(batches) - 1)
    for model in models:
        for batch in batches[:warm] + (batches[warm:] if slow_first_calls(device) else []):
            _forward_ms(model, batch, device, precision)
    return batches[warm:]


def quartiles(samples) -> tuple[float, float, float]:
    """``(q1, median, q3)`` of ``samples``, each within their range (interpolated between samples, never beyond:
    the "inclusive" method; the default one extrapolates from two timings to a negative q1)."""
    samples = list(samples)
    return tuple(statistics.quantiles(samples, n=4, method="inclusive")) if len(samples) > 1 else (samples[0],) * 3


def _forward_ms(model, batch: dict, device: str, precision: str) -> float:
    """Wall time in ms of one forward pass of ``model`` on ``batch``, the device synchronised on both sides."""
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    synchronize(device)
    start = time.perf_counter()
    with _autocast(device, precision):
        model(input_ids=ids, attention_mask=mask)
    synchronize(device)
    return (time.perf_counter() - start) * 1000


def latency_ms(model, encoded, *, device: str = "cpu", n: int = 30, warmup: int = 5,
               precision: str = "auto") -> float:
    """Median (p50) wall time in ms of one review at batch size 1 (see :func:`latency` for its spread)."""
    return latency(model, encoded, device=device, n=n, warmup=warmup, repeats=1, precision=precision)["p50"]


@torch.no_grad()
def throughput(model, encoded, *, device: str = "cpu", batch_size: int = 64, max_batches: int = 8,
               precision: str = "auto") -> dict:
    """Reviews/s and real (non-pad) tokens/s at a large batch, length-grouped and padded as :func:`predict_logits`
    pads them, after one warm-up batch (on a GPU, after every timed batch once:
    :func:`kd_tutorial.device.slow_first_calls`); ``lengths``: the timed reviews' lengths (the FLOPs behind the
    rate)."""
    model.eval().to(device)
    groups = batch_groups(encoded, batch_size, shuffle=True, group_by_length=True, seed=0)[: max_batches + 1]
    multiple, longest = pad_multiple(device), max(encoded.lengths, default=0)
    batches = [collate(encoded, g, multiple=multiple, limit=longest) for g in groups]
    if slow_first_calls(device):
        for batch in batches[1:] or batches:
            _forward_ms(model, batch, device, precision)
    reviews = tokens = 0
    seconds, lengths = 0.0, []
    for i, batch in enumerate(batches):
        ms = _forward_ms(model, batch, device, precision)
        if i == 0 and len(batches) > 1:
            continue  # warm-up
        seconds += ms / 1000
        reviews += batch["input_ids"].shape[0]
        tokens += int(batch["attention_mask"].sum())
        lengths += batch["attention_mask"].sum(1).tolist()
    return {"reviews_per_s": reviews / seconds, "tokens_per_s": tokens / seconds, "lengths": lengths}


def throughput_in_turns(models: dict, encoded, *, device: str = "cpu", batch_size: int = 64, max_batches: int = 8,
                        repeats: int = 3, precision: str = "auto") -> dict:
    """Each model's :func:`throughput`, taken in ``repeats`` passes in turns (:func:`passes_in_turns`), each pass
    over the same ``ceil(max_batches / repeats)`` batches, so that a busy spell falls on every model alike: four
    identical students timed one after another differed 32-fold on a loaded machine. Each model's median pass
    (:func:`median_pass`)."""
    per_pass = max(1, math.ceil(max_batches / repeats))
    passes = passes_in_turns(models, repeats, lambda model: throughput(
        model, encoded, device=device, batch_size=batch_size, max_batches=per_pass, precision=precision))
    return {name: median_pass(runs) for name, runs in passes.items()}


def median_pass(runs: list[dict]) -> dict:
    """The pass of median ``reviews_per_s`` among :func:`throughput`'s ``runs`` (the lower one of an even count),
    with ``passes``: every pass's reviews/s."""
    ranked = sorted(runs, key=lambda run: run["reviews_per_s"])
    return ranked[(len(ranked) - 1) // 2] | {"passes": [run["reviews_per_s"] for run in runs]}


def compare(models: dict, encoded, *, teacher: str = "teacher", device: str = "cpu", batch_size: int = 64,
            logits: dict | None = None, latency_n: int = 30, latency_repeats: int = 3, throughput_batches: int = 8,
            train_tokens_per_s: dict | None = None, precision: str = "auto") -> list[dict]:
    """Measure every model side by side on ``encoded`` (same device, same run) and return table rows.

    Each row: name, accuracy, agreement (with ``teacher``), ece, params, mb, latency_ms (p50 at batch 1)
    with latency_q1_ms / latency_q3_ms (the interquartile range of its ``latency_n`` reviews x ``latency_repeats``
    passes: the reviews' lengths as well as the machine's noise, :func:`latency`) and the
    timings themselves, reviews_per_s and tokens_per_s (batch ``batch_size``; the median of three passes taken in
    turns, :func:`throughput_in_turns`, every pass's in reviews_per_s_passes), train_tokens_per_s (if given),
    and the ``precision`` both timings ran in (the same one, ``"auto"`` resolved for the device).
    ``logits`` may pass already computed predictions to skip recomputing them. Each model goes back to the device
    it came on once measured, so a comparison does not pile every model onto a GPU.
    """
    logits, home = dict(logits or {}), {name: _device_of(model) for name, model in models.items()}
    for name, model in models.items():
        if name not in logits:
            logits[name] = predict_logits(model, encoded, batch_size=batch_size, device=device, precision=precision)
            model.to(home[name])  # predict_logits leaves it on the device; the timings send each home after its turn
    timings = latency_in_turns(models, encoded, device=device, n=latency_n, repeats=latency_repeats,
                               precision=precision)
    speeds = throughput_in_turns(models, encoded, device=device, batch_size=batch_size,
                                 max_batches=throughput_batches, precision=precision)
    rows = []
    for name, model in models.items():
        speed, timing = speeds[name], timings[name]
        rows.append({
            "name": name,
            "accuracy": accuracy(logits[name], encoded.labels),
            "agreement": agreement(logits[name], logits[teacher]) if teacher in logits else None,
            "ece": expected_calibration_error(logits[name], encoded.labels),
            "params": count_parameters(model),
            "mb": model_size_mb(model),
            "latency_ms": timing["p50"], "latency_q1_ms": timing["q1"], "latency_q3_ms": timing["q3"],
            "latency_samples_ms": timing["samples"],
            "reviews_per_s": speed["reviews_per_s"], "reviews_per_s_passes": speed["passes"],
            "tokens_per_s": speed["tokens_per_s"],
            "train_tokens_per_s": (train_tokens_per_s or {}).get(name),
            "precision": resolve_precision(device, precision),
        })
    return rows


def latency_in_turns(models: dict, encoded, *, device: str = "cpu", n: int = 30, repeats: int = 3,
                     precision: str = "auto") -> dict:
    """Each model's :func:`latency`, its ``repeats`` passes taken in turns, so that the machine's drift over the
    comparison (another process, clock speed, heat) falls on every model alike, not on whichever was timed last.
    Identical architectures timed one after another differed by 40 % in a table. On a GPU every round times one pass
    of each model (the order reversed every other round), and each model goes back to the device it came on after
    its pass, so that a comparison does not pile every model onto the GPU. On the CPU, where the models stay where
    they are, the turns are taken review by review: sample ``i`` of every model is the same review, timed moments
    apart, so that even a busy second falls on every model alike (docs/tuning/search-front-stability.json: a
    search's front chosen from these p50s, re-timed beside a busy process)."""
    if device_type(device) == "cpu":
        samples = _turns_by_review(models, encoded, n=n, repeats=repeats, precision=precision)
    else:
        samples = _turns_by_pass(models, encoded, device=device, n=n, repeats=repeats, precision=precision)
    return {name: dict(zip(("q1", "p50", "q3"), quartiles(times))) | {"samples": times}
            for name, times in samples.items()}


def _turns_by_pass(models: dict, encoded, *, device: str, n: int, repeats: int, precision: str) -> dict:
    """``{name: timings}``: :func:`latency`'s passes of the models in turns (:func:`_passes_in_turns`)."""
    passes = passes_in_turns(models, repeats, lambda model: latency(model, encoded, device=device, n=n, repeats=1,
                                                                     precision=precision))
    return {name: [t for timing in runs for t in timing["samples"]] for name, runs in passes.items()}


def passes_in_turns(models: dict, repeats: int, measure) -> dict[str, list]:
    """``{name: [measure(model) of each round]}``: every round measures each model once, the order reversed every
    other round, each model sent back to the device it came on after its turn."""
    home = {name: _device_of(model) for name, model in models.items()}
    out: dict[str, list] = {name: [] for name in models}
    for r in range(repeats):
        for name in (list(models) if r % 2 == 0 else list(reversed(models))):
            out[name].append(measure(models[name]))
            models[name].to(home[name])
    return out


@torch.no_grad()
def _turns_by_review(models: dict, encoded, *, n: int, repeats: int, precision: str) -> dict:
    """``{name: timings}`` on the CPU: for each of ``repeats`` rounds and each of the ``n`` reviews, every model
    times that review (the order reversed at every other review), after the warm-up :func:`latency` makes."""
    home = {name: _device_of(model) for name, model in models.items()}
    for model in models.values():
        model.eval().to("cpu")
    timed = _warmed_up(list(models.values()), encoded, n, 5, "cpu", precision)
    samples: dict[str, list[float]] = {name: [] for name in models}
    for k, batch in enumerate(batch for _ in range(repeats) for batch in timed):
        for name in (list(models) if k % 2 == 0 else list(reversed(models))):
            samples[name].append(_forward_ms(models[name], batch, "cpu", precision))
    for name, model in models.items():
        model.to(home[name])
    return samples


def _device_of(model) -> torch.device:
    """Where ``model``'s parameters are (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _check_bins(n_bins) -> None:
    """Refuse, in one line, a number of confidence bins that is not a whole number >= 1: ``n_bins=0`` gave an ECE of
    0.0 that was never computed (no bin), ``n_bins=-3`` an error inside torch.linspace."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ValueError(f"n_bins={n_bins!r}: give a whole number of confidence bins >= 1 ({ECE_BINS} by default)")


# --------------------------------------------------------------------------- paired statistics

VERDICTS = ("better", "worse", "no detectable difference at this size")


def choice_key(accuracy: float) -> float:
    """An accuracy as a choice between runs compares it: rounded to 6 digits, since float32 means of the same right
    answers can differ in the 8th (equal keys are a tie)."""
    return round(accuracy, 6)


def correct_matrix(logits_per_seed: list[torch.Tensor], labels) -> torch.Tensor:
    """``(seeds, N)`` booleans: whether each seed's model got each review right. Every review needs its label: a
    row labelled -1 (unlabelled) would count as wrong for both models of a comparison, so it is refused."""
    labels = torch.as_tensor(labels)
    for z in logits_per_seed:
        _one_label_per_row(z, labels, "correct_matrix")
    if (labels < 0).any():
        raise ValueError(f"{int((labels < 0).sum()):,} of {len(labels):,} reviews have no label (-1): compare models "
                         "on a labelled split (the test reviews, or validation)")
    return torch.stack([check_finite(z).argmax(-1) == labels for z in logits_per_seed])


def paired_bootstrap(correct_a: torch.Tensor, correct_b: torch.Tensor, *, n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Accuracy of A minus accuracy of B with a paired bootstrap confidence interval.

    ``correct_a`` and ``correct_b`` are ``(seeds, N)`` (or ``(N,)``) booleans on the
    *same* reviews. Each bootstrap sample draws ``N`` reviews with replacement and
    keeps every seed's answers on them, so the interval reflects which reviews were
    drawn, pooled over seeds: ``diff = mean over seeds and reviews of (a - b)``.

    A review's difference takes one of at most ``2 * seeds + 1`` values, so a sample
    is drawn as how many times it picks each value (a multinomial), not as ``N``
    indices: the same distribution, without an ``n_boot x N`` tensor of indices.
    """
    _check_resampling(n_boot, level)
    a, b = _paired(correct_a, correct_b)
    per_review = (a.double() - b.double()).mean(0)  # (N,): the difference on each review, averaged over seeds
    g = torch.Generator().manual_seed(seed)
    n = per_review.numel()
    values, counts = torch.unique(per_review, return_counts=True)
    boot = multinomial_counts(counts, n_boot, generator=g) @ values / n
    tail = (1 - level) / 2
    low, high = torch.quantile(boot.double(), torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return {"diff": float(per_review.mean()), "ci_low": low, "ci_high": high, "level": level, "n_boot": n_boot,
            "reviews": n, "seeds": a.shape[0]}


def teacher_share(correct_student: torch.Tensor, correct_teacher: torch.Tensor, *, n_boot: int = 10_000,
                  seed: int = 0, level: float = 0.95) -> dict:
    """The student's accuracy as a share of the teacher's, ``share = acc(student) / acc(teacher)``, with a paired
    bootstrap confidence interval.

    ``correct_student`` is ``(seeds, N)`` (or ``(N,)``) booleans, ``correct_teacher`` ``(N,)`` (or one row per
    teacher), on the same reviews; accuracies are pooled over the rows. Each bootstrap sample draws ``N`` reviews
    with replacement and takes both models' answers on them, so the ratio's numerator and denominator move
    together (a review the teacher gets wrong is often one the student gets wrong). A review is one of at most
    ``2 * (seeds + 1)`` (student, teacher) pairs, drawn as a multinomial as in :func:`paired_bootstrap`. A sample
    in which the teacher gets no review right has no share and is left out, so the interval is conditional on the
    others: with thousands of reviews no sample is left out, with a teacher right on a handful many would be.
    """
    _check_resampling(n_boot, level)
    s, t = _as_matrix(correct_student).double().mean(0), _as_matrix(correct_teacher).double().mean(0)
    if s.shape != t.shape:
        raise ValueError(f"a share of the teacher needs the same reviews: {s.numel()} vs {t.numel()}")
    if not t.any():
        raise ValueError("a share of the teacher needs a teacher that gets at least one review right")
    pairs, counts = torch.unique(torch.stack([s, t], 1), dim=0, return_counts=True)
    draws = multinomial_counts(counts, n_boot, generator=torch.Generator().manual_seed(seed))
    right = draws @ pairs[:, 1]  # the teacher's right answers in each sample (the N cancels in the ratio)
    boot = torch.where(right > 0, (draws @ pairs[:, 0]) / right, torch.nan)  # no share without one: left out
    tail = (1 - level) / 2
    low, high = torch.nanquantile(boot, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return {"share": float(s.mean() / t.mean()), "ci_low": low, "ci_high": high, "level": level, "n_boot": n_boot,
            "reviews": s.numel(), "seeds": _as_matrix(correct_student).shape[0]}


def multinomial_counts(counts: torch.Tensor, n_draws: int, *, generator=None) -> torch.Tensor:
    """``(n_draws, K)`` float64 draws of Multinomial(N, counts / N), ``N = counts.sum()``: how often ``N`` draws
    with replacement from a pool with ``counts[k]`` items of kind ``k`` pick each kind.

    One binomial per kind, on the draws that are left: ``X_k ~ Binomial(N - X_1 - ... - X_{k-1},
    counts[k] / (counts[k] + ... + counts[K-1]))``.
    """
    counts = counts.double()
    left = torch.full((n_draws,), float(counts.sum()), dtype=torch.float64)
    columns = []
    for k in range(len(counts) - 1):
        share = float(counts[k] / counts[k:].sum())
        picked = torch.binomial(left, torch.full_like(left, share), generator=generator)
        columns.append(picked)
        left = left - picked
    return torch.stack(columns + [left], 1)


def mcnemar(correct_a: torch.Tensor, correct_b: torch.Tensor) -> dict:
    """McNemar's exact test of "A and B are equally accurate", on the reviews where they differ.

    ``n_ab``: reviews A got right and B wrong; ``n_ba``: the reverse. For one seed,
    under the null each such review goes either way with probability 1/2, so the
    two-sided p-value is ``min(1, 2 * P(Binomial(n_ab + n_ba, 1/2) <= min(n_ab, n_ba)))``.
    With several seeds each review counts once, with its difference ``d = a - b``
    averaged over the seeds: the exact sign-flip test of ``sum(d)``, in which every
    review's ``d`` keeps or flips its sign with probability 1/2 (for one seed, McNemar's
    test exactly; ``n_ab``, ``n_ba`` count the reviews with ``d > 0``, ``d < 0``).
    Counting every (review, seed) pair instead would treat one review's answers
    from three seeds as three independent reviews, and make ``p`` far too small.
    """
    a, b = _paired(correct_a, correct_b)
    seeds = a.shape[0]
    d = (a.long() - b.long()).sum(0)  # seeds x the per-review mean difference: whole numbers in [-seeds, seeds]
    n_ab, n_ba = int((d > 0).sum()), int((d < 0).sum())
    observed = abs(int(d.sum()))
    if observed == 0:
        return {"n_ab": n_ab, "n_ba": n_ba, "p": 1.0}
    pmf = _sign_flip_pmf([int((d.abs() == k).sum()) for k in range(1, seeds + 1)])
    centre = (len(pmf) - 1) // 2
    tails = torch.cat([pmf[: centre - observed + 1], pmf[centre + observed:]])  # sum(d) <= -obs or >= +obs
    return {"n_ab": n_ab, "n_ba": n_ba, "p": min(1.0, float(tails.sum()))}


def binomial_lower_tail(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p): sum over i <= k of C(n, i) p^i (1 - p)^(n - i), summed in log space (float64),
    so a tail of 1e-300 keeps its digits."""
    if k < 0:
        return 0.0
    i = torch.arange(min(k, n) + 1, dtype=torch.float64)
    log_terms = (math.lgamma(n + 1) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1)
                 + i * math.log(p) + (n - i) * math.log1p(-p))
    return min(1.0, float(torch.logsumexp(log_terms, 0).exp()))


def _sign_flip_pmf(counts: list[int]) -> torch.Tensor:
    """P(sum of k * (+-1) = t) for t = -m..m (m = sum of k * counts[k-1]), every sign a fair coin, float64.

    ``counts[k-1]`` reviews have magnitude ``k``: their sum is ``k * (2 B - n)`` with
    ``B ~ Binomial(n, 1/2)``, and the magnitudes' sums are independent, so the pmf is the
    convolution of one dilated binomial pmf per magnitude (sums of positive terms: tails
    as small as 1e-300 keep their precision).
    """
    pmf = np.ones(1)
    for k, n in enumerate(counts, start=1):
        if n == 0:
            continue
        i = torch.arange(n + 1, dtype=torch.float64)
        binomial = torch.exp(math.lgamma(n + 1) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1)
                             - n * math.log(2)).numpy()
        step = 2 * k  # B -> B + 1 moves the sum by 2k: each residue class of the sum convolves with the binomial
        out = np.zeros(len(pmf) + step * n)
        for r in range(min(step, len(pmf))):  # direct sums, memory linear in n (conv1d's im2col took n^2: 10 GB)
            out[r::step] = np.convolve(pmf[r::step], binomial)
        pmf = out
    return torch.from_numpy(pmf)


def verdict(ci_low: float, ci_high: float, p: float | None = None, level: float = 0.95) -> str:
    """"better" when the whole interval is above 0, "worse" when below, otherwise no detectable difference; given
    McNemar's ``p``, it must agree (``p < 1 - level``). Where the models disagree on only a few reviews, the
    bootstrap's percentile interval is too narrow (one review A gets right and B wrong gives [1, 1]); the exact
    test is not."""
    if p is not None and not p < round(1 - level, 12):  # 1 - 0.95 is 0.05000000000000004 in floats
        return VERDICTS[2]
    if ci_low > ROUNDING_NOISE:  # a bound of 1e-17 is a sum of differences that should have been 0, not a gain
        return VERDICTS[0]
    if ci_high < -ROUNDING_NOISE:
        return VERDICTS[1]
    return VERDICTS[2]


ROUNDING_NOISE = 1e-12  # below any difference one review makes among a million (1e-6): rounding, not a measurement


def compare_paired(correct_a: torch.Tensor, correct_b: torch.Tensor, **bootstrap) -> dict:
    """:func:`paired_bootstrap`, :func:`mcnemar` and the :func:`verdict`, in one dict, with each seed's own
    difference in accuracy (``diff_per_seed``). The interval and the test resample and pair *reviews*: they say
    whether these trained models differ on new reviews, not how much the difference moves with the training seed,
    which ``diff_per_seed`` shows."""
    stats = paired_bootstrap(correct_a, correct_b, **bootstrap)
    test = mcnemar(correct_a, correct_b)
    a, b = _paired(correct_a, correct_b)
    return stats | {"p_mcnemar": test["p"], "n_ab": test["n_ab"], "n_ba": test["n_ba"],
                    "verdict": verdict(stats["ci_low"], stats["ci_high"], test["p"], stats["level"]),
                    "diff_per_seed": (a.float().mean(1) - b.float().mean(1)).tolist()}


def _paired(correct_a: torch.Tensor, correct_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models' answers as ``(seeds, N)`` booleans, refused unless they cover the same reviews and seeds."""
    a, b = _as_matrix(correct_a), _as_matrix(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same reviews and seeds: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b


def _as_matrix(correct: torch.Tensor) -> torch.Tensor:
    """Right/wrong answers as ``(seeds, N)`` booleans (``(N,)``: one seed); refused unless 1 or 2 dimensions and at
    least one review, in one line (a third dimension was read as more reviews; none failed inside torch), and
    unless every value is a boolean or exactly 0 or 1: ``.bool()`` read confidences of 0.6-0.9 and 0.1-0.4 alike as
    right answers, and reported no difference between them."""
    correct = torch.as_tensor(correct)
    if correct.dtype != torch.bool:
        if not ((correct == 0) | (correct == 1)).all():
            bad = correct[(correct != 0) & (correct != 1)].flatten()[0].item()
            raise ValueError(f"right answers must be booleans (or exactly 0 and 1), got {bad:.4g} among the "
                             f"{correct.dtype} values: pass correct_matrix(logits_per_seed, labels), whether each "
                             "model got each review right, not probabilities or scores")
        correct = correct.bool()
    if correct.dim() not in (1, 2) or correct.shape[-1] == 0:
        raise ValueError(f"right answers must be (seeds, reviews) or (reviews,) booleans with at least one review, "
                         f"got shape {tuple(correct.shape)}: pass correct_matrix(logits_per_seed, labels)")
    return correct[None] if correct.dim() == 1 else correct


def _check_resampling(n_boot: int, level: float) -> None:
    """Refuse, in one line, a bootstrap with no resample or a level that is no fraction strictly between 0 and 1
    (``level=95`` failed inside torch.quantile; ``level=0`` gave a zero-width interval, and a verdict with it)."""
    if not (isinstance(n_boot, numbers.Integral) and n_boot >= 1):
        raise ValueError(f"n_boot is how many resamples to draw, at least 1 (10_000 by default): got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level is the interval's coverage as a fraction strictly between 0 and 1 (0.95 for 95 %), "
                         f"got {level!r}")
