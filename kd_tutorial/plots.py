"""Matplotlib figures from training histories and results (they compute no metric themselves).

Every figure has a title, labelled axes and a legend, and can be saved as PNG.
"""
from __future__ import annotations

from pathlib import Path

from .recipes import RECIPES
from .store import atomic_savefig

_STYLES = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1)), (0, (3, 1, 1, 1)), (0, (5, 2, 1, 2)),
           (0, (2, 2)), (0, (4, 1, 1, 1, 1, 1))]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
RUN_STYLE = {"kd+transfer": "-", "kd": "--", "baseline": ":"}  # line style of each run (recipe) in curves
RUN_MARKER = {"kd+transfer": "o", "kd": "s", "baseline": "^"}  # marker of each run in scatter plots
PIPELINE_PLOTS = ("training_curves.png", "accuracy_vs_latency.png")  # what distill writes into --out
for _i, _name in enumerate(n for n in RECIPES if n not in RUN_STYLE):
    RUN_STYLE[_name] = _STYLES[(_i + 3) % len(_STYLES)]
    RUN_MARKER[_name] = _MARKERS[(_i + 3) % len(_MARKERS)]


def _run_of(name: str) -> str | None:
    """The run in a model name: ``"distil-2L kd+transfer s0"`` -> ``"kd+transfer"`` (None for the teacher)."""
    return next((token for token in name.split() if token in RUN_STYLE), None)


def _colours(names) -> dict:
    """One colour per model (the first word of its name): black for the teacher, C0, C1... for the students."""
    families = dict.fromkeys(name.split()[0] for name in names if name.split()[0] != "teacher")
    return {"teacher": "black"} | {family: f"C{i}" for i, family in enumerate(families)}


def _plt():
    import matplotlib
    if not _in_notebook():
        matplotlib.use("Agg")  # scripts and tests: no display needed
    import matplotlib.pyplot as plt
    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
        return get_ipython() is not None
    except ImportError:
        return False


def _smooth(values: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def training_curves(histories: dict, title: str = "Training curves"):
    """Loss per optimizer step (smoothed) and validation accuracy per epoch, one line per model.

    One colour per model (the first word of its name: ``teacher``, ``distil-3L``...), one line style and marker per
    run (the markers of :func:`accuracy_vs_latency`).
    """
    plt = _plt()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    colour = _colours(histories)
    for name, h in histories.items():
        if not h:
            continue
        # the run's marker too (the one accuracy_vs_latency gives it): some line styles look alike at this size,
        # e.g. ":" (baseline) and the densely dotted one (kd+transfer+cosine)
        run = _run_of(name)
        style = dict(linestyle=RUN_STYLE.get(run, "-"), color=colour[name.split()[0]],
                     marker=RUN_MARKER.get(run, "o"), markersize=4)
        logged = h.get("steps") or []  # a results summary keeps the validation passes, not the steps
        if logged:
            steps = [s["step"] for s in logged]
            ax_loss.plot(steps, _smooth([s["loss"] for s in logged], max(1, len(steps) // 50)), label=name,
                         markevery=max(1, len(steps) // 6), **style)
        # x = the optimizer step of each validation pass: runs over data sets of different sizes line up
        evals = h.get("evals") or [{"step": e["step"], "val_acc": e["val_acc"]} for e in h["epochs"]
                                   if e.get("val_acc") is not None]
        ends, accs = [e["step"] for e in evals], [100 * e["val_acc"] for e in evals]
        if accs:
            ax_acc.plot(ends, accs, label=name, **style)
    ax_loss.set(xlabel="optimizer step", ylabel="training loss (smoothed)",
                title="Loss (KD runs: distillation loss; others: cross-entropy)")
    ax_acc.set(xlabel="optimizer step", ylabel="validation accuracy (%)",
               title="Validation accuracy (each validation pass)")
    if not ax_loss.lines:
        ax_loss.text(0.5, 0.5, "no per-step losses here\n(a results summary keeps the validation passes only)",
                     ha="center", va="center", transform=ax_loss.transAxes, fontsize=9)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    # one legend for both panels (they draw the same runs), under them: inside a panel, nine runs' legend hid curves
    keys = {line.get_label(): line for ax in (ax_loss, ax_acc) for line in ax.lines}
    if keys:
        fig.legend(list(keys.values()), list(keys), loc="outside lower center", ncols=min(3, len(keys)), fontsize=7)
    fig.suptitle(title)
    return fig


def accuracy_vs_latency(rows: list[dict], title: str = "Accuracy against latency", split: str = "test"):
    """Each model's accuracy against its p50 batch-1 latency: one colour per model, one marker per run
    (o: KD + transfer set, square: KD, triangle: hard-label baseline, others: the other recipes); marker
    area grows with parameters, horizontal bars span the latency's interquartile range."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    colour = _colours(r["name"] for r in rows)
    for row in rows:
        if row.get("latency_ms") is None:
            continue
        size = 30 + 300 * (row["params"] / max(r["params"] for r in rows))
        ax.scatter(row["latency_ms"], 100 * row["accuracy"], s=size, alpha=0.7, label=row["name"],
                   color=colour[row["name"].split()[0]], marker=RUN_MARKER.get(_run_of(row["name"]), "o"))
        xerr = None
        if row.get("latency_q1_ms") is not None:
            xerr = [[row["latency_ms"] - row["latency_q1_ms"]], [row["latency_q3_ms"] - row["latency_ms"]]]
        if row.get("accuracy_std") or xerr is not None:
            ax.errorbar(row["latency_ms"], 100 * row["accuracy"], xerr=xerr,
                        yerr=100 * row["accuracy_std"] if row.get("accuracy_std") else None, fmt="none",
                        ecolor="gray")
    ax.set(xlabel="p50 latency at batch 1 (ms)", ylabel=f"{split} accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    # beside the axes: inside, "best" placement weighs the markers, not the error bars, and hid the bars' ends
    for handle in fig.legend(handles, labels, fontsize=7, loc="outside right upper").legend_handles:
        handle.set_sizes([40])  # legend markers of one size: the plot's marker area encodes parameters
    note = _caption(rows, split)
    if note:  # what the marker sizes and bars are, on the figure itself: seed spread is not a confidence interval
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=8)
        fig.get_layout_engine().set(rect=(0, 0.045 * (note.count("\n") + 1), 1, 1 - 0.045 * (note.count("\n") + 1)))
    return fig


def _caption(rows: list[dict], split: str) -> str:
    """The caption under :func:`accuracy_vs_latency`: what its marker sizes and error bars show ("" for neither)."""
    drawn = [r for r in rows if r.get("latency_ms") is not None]
    lines, bars = [], []
    if len({r["params"] for r in drawn}) > 1:
        lines.append("marker area grows with the number of parameters")
    if any(r.get("latency_q1_ms") is not None for r in drawn):
        bars.append("horizontal bars: latency p25-p75 (interquartile range)")
    if any(r.get("accuracy_std") for r in drawn):
        seeds = max(r.get("seeds") or 0 for r in drawn)
        bars.append(f"vertical bars: {split} accuracy ± 1 std over " + (f"{seeds} seeds" if seeds else "seeds"))
    return "\n".join(lines + (["; ".join(bars)] if bars else []))


def reliability_diagram(curves: dict, title: str = "Reliability diagram"):
    """Accuracy against confidence per bin (from :func:`kd_tutorial.evaluate.reliability_curve`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    for name, c in curves.items():
        pts = [(x, y) for x, y, n in zip(c["confidence"], c["accuracy"], c["count"]) if n]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set(xlabel="confidence (max probability)", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, path: str | Path) -> str:
    """Save ``fig`` as a PNG (dpi 120) and close it; return the path. Written whole or not at all
    (:func:`kd_tutorial.store.atomic_savefig`: a full disk is one StorageError that names the fix)."""
    plt = _plt()
    try:
        atomic_savefig(fig, Path(path), dpi=120)
    finally:
        plt.close(fig)
    return str(path)


def first_seed(histories: dict, seeds: list[int]) -> dict:
    """The teacher's and the first seed's histories, without the ``" s<seed>"`` suffix (all when one seed)."""
    if len(seeds) < 2:
        return histories
    tag = f" s{seeds[0]}"
    return {n.removesuffix(tag): h for n, h in histories.items() if n == "teacher" or n.endswith(tag)}


def save_pipeline_plots(results: dict, out: str | Path) -> list[str]:
    """The pipeline's PNGs: training curves (the first seed's, when there are several) and accuracy
    against latency."""
    out = Path(out)
    split = results["run"]["evaluated_on"]
    profile = results["run"]["profile"]
    seeds = results["run"]["seeds"]
    title = f"Training curves ({profile} profile" + (f", seed {seeds[0]} of {len(seeds)})" if len(seeds) > 1 else ")")
    curves, latency = PIPELINE_PLOTS
    return [save(training_curves(first_seed(results["histories"], seeds), title), out / curves),
            save(accuracy_vs_latency(results["models"], f"Accuracy against latency ({profile} profile, "
                                     f"device {results['run']['device']})", split), out / latency)]
