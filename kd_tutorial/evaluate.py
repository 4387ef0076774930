"""Metrics and timing: accuracy, agreement, calibration, size, latency and throughput.

Every model in a comparison is measured here, in one run, on one device, on the
same reviews: numbers from different machines are never mixed.
"""
from __future__ import annotations

import statistics
import time

import torch

ECE_BINS = 10


@torch.no_grad()
def predict_logits(model, encoded, *, batch_size: int = 64, device: str | None = None, precision: str = "auto",
                   progress: bool = False, desc: str = "predict") -> torch.Tensor:
    """Logits ``[N, C]`` (float32, on the CPU) for every row of ``encoded``, in row order."""
    from tqdm.auto import tqdm

    from .data import make_batches
    from .env import pick_device
    from .train import autocast_dtype
    device = device or pick_device()
    was_training = model.training
    model.eval().to(device)
    dtype = autocast_dtype(device, precision)
    out = None
    for batch in tqdm(make_batches(encoded, batch_size, shuffle=False, group_by_length=True), desc=desc,
                      disable=not progress, leave=False):
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits.float().cpu()
        if out is None:
            out = torch.empty(len(encoded), logits.shape[-1])
        out[batch["index"]] = logits
    model.train(was_training)
    return out


def accuracy(logits: torch.Tensor, labels) -> float:
    """Fraction of rows whose arg-max class equals the label (rows labelled -1 are skipped)."""
    labels = torch.as_tensor(labels)
    mask = labels >= 0
    return float((logits.argmax(-1)[mask] == labels[mask]).float().mean())


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Fraction of rows on which two models predict the same class (e.g. student and teacher)."""
    return float((logits_a.argmax(-1) == logits_b.argmax(-1)).float().mean())


def expected_calibration_error(logits: torch.Tensor, labels, n_bins: int = ECE_BINS) -> float:
    """ECE with ``n_bins`` equal-width confidence bins: ``sum_b |B_b|/N * |acc(B_b) - conf(B_b)|``."""
    labels = torch.as_tensor(labels)
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
    """Per-bin confidence, accuracy and count, for a reliability diagram."""
    labels = torch.as_tensor(labels)
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


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def latency_ms(model, encoded, *, device: str = "cpu", n: int = 30, warmup: int = 5) -> float:
    """Median (p50) wall time in ms of one review at batch size 1, after ``warmup`` untimed calls."""
    from .data import make_batches
    model.eval().to(device)
    batches = make_batches(encoded, 1, shuffle=True, group_by_length=False, seed=0)[: n + warmup]
    times = []
    for i, batch in enumerate(batches):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        _sync(device)
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=mask)
        _sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@torch.no_grad()
def throughput(model, encoded, *, device: str = "cpu", batch_size: int = 64, max_batches: int = 8,
               precision: str = "auto") -> dict:
    """Reviews/s and real (non-pad) tokens/s at a large batch, length-grouped, after one warm-up batch."""
    from .data import make_batches
    from .train import autocast_dtype
    model.eval().to(device)
    dtype = autocast_dtype(device, precision)
    batches = make_batches(encoded, batch_size, shuffle=True, group_by_length=True, seed=0)[: max_batches + 1]
    reviews = tokens = 0
    seconds = 0.0
    for i, batch in enumerate(batches):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            model(input_ids=ids, attention_mask=mask)
        _sync(device)
        if i == 0 and len(batches) > 1:
            continue  # warm-up
        seconds += time.perf_counter() - start
        reviews += ids.shape[0]
        tokens += int(mask.sum())
    return {"reviews_per_s": reviews / seconds, "tokens_per_s": tokens / seconds}


def compare(models: dict, encoded, *, teacher: str = "teacher", device: str = "cpu", batch_size: int = 64,
            logits: dict | None = None, latency_n: int = 30, throughput_batches: int = 8,
            train_tokens_per_s: dict | None = None) -> list[dict]:
    """Measure every model side by side on ``encoded`` (same device, same run) and return table rows.

    Each row: name, accuracy, agreement (with ``teacher``), ece, params, mb, latency_ms (p50, batch 1),
    reviews_per_s and tokens_per_s (batch ``batch_size``), train_tokens_per_s (if given).
    ``logits`` may pass already computed predictions to skip recomputing them.
    """
    from .models import count_parameters, model_size_mb
    logits = dict(logits or {})
    for name, model in models.items():
        if name not in logits:
            logits[name] = predict_logits(model, encoded, batch_size=batch_size, device=device)
    rows = []
    for name, model in models.items():
        speed = throughput(model, encoded, device=device, batch_size=batch_size, max_batches=throughput_batches)
        rows.append({
            "name": name,
            "accuracy": accuracy(logits[name], encoded.labels),
            "agreement": agreement(logits[name], logits[teacher]) if teacher in logits else None,
            "ece": expected_calibration_error(logits[name], encoded.labels),
            "params": count_parameters(model),
            "mb": model_size_mb(model),
            "latency_ms": latency_ms(model, encoded, device=device, n=latency_n),
            "reviews_per_s": speed["reviews_per_s"],
            "tokens_per_s": speed["tokens_per_s"],
            "train_tokens_per_s": (train_tokens_per_s or {}).get(name),
        })
    return rows


def format_table(rows: list[dict], title: str | None = None) -> str:
    """A plain-text table of :func:`compare` rows (markdown-compatible)."""
    cols = [("model", "name", "{}"), ("acc %", "accuracy", "{:.2f}"), ("agree %", "agreement", "{:.2f}"),
            ("ECE", "ece", "{:.3f}"), ("params M", "params", "{:.2f}"), ("MB", "mb", "{:.1f}"),
            ("p50 ms", "latency_ms", "{:.2f}"), ("reviews/s", "reviews_per_s", "{:.0f}")]
    scale = {"accuracy": 100, "agreement": 100, "params": 1e-6}

    def cell(row, key, fmt):
        value = row.get(key)
        if value is None:
            return "-"
        if isinstance(value, (int, float)) and key in scale:
            value = value * scale[key]
        return fmt.format(value)

    header = [c[0] for c in cols]
    body = [[cell(r, k, f) for _, k, f in cols] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(b, widths)) + " |" for b in body]
    return ((title + "\n") if title else "") + "\n".join(lines)


def results_markdown(results: dict) -> str:
    """The README's results table, rendered from a ``results.json`` (never typed by hand)."""
    run = results["run"]
    rows = []
    for r in results["models"]:
        acc = f"{100 * r['accuracy']:.2f}"
        if r.get("accuracy_std"):
            acc += f" ± {100 * r['accuracy_std']:.2f}"
        train_speed = f"{r['train_tokens_per_s']:.0f}" if r.get("train_tokens_per_s") else "-"
        agree = f"{100 * r['agreement']:.1f}" if r.get("agreement") is not None else "-"
        if r.get("agreement_std"):
            agree += f" ± {100 * r['agreement_std']:.1f}"
        rows.append(f"| {r['name']} | {acc} | {agree} | {r['ece']:.3f} | {r['params'] / 1e6:.2f} | "
                    f"{r['latency_ms']:.2f} | {r['reviews_per_s']:.0f} | {train_speed} |")
    split = run["evaluated_on"]
    status = list(run.get("student_status", {}).values())
    reused = (f"; {status.count('cached')} of {len(status)} student runs taken from the artifact cache"
              if "cached" in status else "")
    head = (f"Profile `{run['profile']}`, {run['split_sizes'].get('test', '?')} {split} reviews, device "
            f"`{run['device']}`, seeds {run['seeds']}, wall time {run['wall_seconds']:.0f} s "
            f"(teacher {run['phase_seconds']['teacher']:.0f} s, students {run['phase_seconds']['students']:.0f} s"
            f"{reused}), commit `{run.get('git_commit') or '-'}`.\n\n")
    table = (f"| model | {split} acc % | agreement % | ECE ({ECE_BINS} bins) | params M | p50 ms (batch 1) | "
             "reviews/s | train tokens/s |\n|---|---|---|---|---|---|---|---|\n")
    return head + table + "\n".join(rows) + "\n\n"
