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
RUN_MARKER = {"kd+transfer": "o", "kd": "s", "baseline": "^"}  # marker of each run in training curves
RUN_COLOUR = {"baseline": "C7", "kd": "C1", "kd+transfer": "C0", "pseudo-label": "C2"}  # grey: the baseline
PIPELINE_PLOTS = ("training_curves.png", "accuracy_vs_latency.png")  # what distill writes into --out
for _i, _name in enumerate(n for n in RECIPES if n not in RUN_STYLE):
    RUN_STYLE[_name] = _STYLES[(_i + 3) % len(_STYLES)]
    RUN_MARKER[_name] = _MARKERS[(_i + 3) % len(_MARKERS)]
for _i, _name in enumerate(n for n in RECIPES if n not in RUN_COLOUR):
    RUN_COLOUR[_name] = f"C{(3, 4, 5, 6, 9, 8)[_i % 6]}"  # olive (C8) last: the faintest on white


def _run_of(name: str) -> str | None:
    """The run in a model name: ``"distil-2L kd+transfer s0"`` -> ``"kd+transfer"`` (None for the teacher)."""
    return next((token for token in name.split() if token in RUN_STYLE), None)


def run_colour(name: str) -> str:
    """The colour of a model name's run, the same in every figure: black for the teacher (or a name with no run),
    grey for the hard-label baseline, one of matplotlib's ten others for each recipe."""
    return RUN_COLOUR.get(_run_of(name), "black")


def _model_markers(names) -> dict:
    """One marker per model (a name's first word), in order: a star for the teacher, then circle, square, triangle..."""
    models = dict.fromkeys(name.split()[0] for name in names if name.split()[0] != "teacher")
    return {"teacher": "*"} | {model: _MARKERS[i % len(_MARKERS)] for i, model in enumerate(models)}


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


def _by_model(histories: dict) -> dict[str, list[tuple[str, dict]]]:
    """The histories that hold anything, grouped by model (a name's first word), the teacher first."""
    groups: dict[str, list[tuple[str, dict]]] = {}
    for name, h in sorted(histories.items(), key=lambda item: item[0].split()[0] != "teacher"):
        if h:
            groups.setdefault(name.split()[0], []).append((name, h))
    return groups


def _evals(h: dict) -> list[dict]:
    """A history's validation passes, ``{"step", "val_acc"}``: its ``evals``, or else its epochs that validated."""
    return h.get("evals") or [{"step": e["step"], "val_acc": e["val_acc"]} for e in h.get("epochs") or []
                              if e.get("val_acc") is not None]


def _draw_run(row, name: str, h: dict) -> None:
    """One run's smoothed loss per step (when a loss panel and steps are there) and its validation accuracy."""
    run = _run_of(name)
    style = dict(linestyle=RUN_STYLE.get(run, "-"), color=run_colour(name), marker=RUN_MARKER.get(run, "o"),
                 markersize=4)
    logged = h.get("steps") or []  # a results summary keeps the validation passes, not the steps
    if logged and len(row) > 1:
        steps = [s["step"] for s in logged]
        row[0].plot(steps, _smooth([s["loss"] for s in logged], max(1, len(steps) // 50)), label=name,
                    markevery=max(1, len(steps) // 6), **style)
    evals = _evals(h)  # x = the optimizer step of each validation pass
    if evals:
        row[-1].plot([e["step"] for e in evals], [100 * e["val_acc"] for e in evals], label=name, **style)


def training_curves(histories: dict, title: str = "Training curves", teacher_val_acc: float | None = None):
    """One row per model (the teacher, then each student): its runs' training loss per optimizer step (smoothed)
    and validation accuracy at each validation pass, one colour, line style and marker per run (the run's colour
    and marker in :func:`accuracy_vs_latency` too). A student's accuracy panel draws the teacher's validation
    accuracy as a reference: ``teacher_val_acc``, else the last pass of the teacher's history (whose weights it
    keeps). A results summary
    keeps no steps: then the accuracy panels alone."""
    plt = _plt()
    groups = _by_model(histories)
    with_loss = any(h.get("steps") for runs in groups.values() for _, h in runs)
    fig, axes = plt.subplots(max(1, len(groups)), 2 if with_loss else 1, squeeze=False, layout="constrained",
                             figsize=(11 if with_loss else 7.5, 0.8 + 2.9 * max(1, len(groups))))
    teacher_evals = _evals(dict(groups.get("teacher", [("", {})])[0][1]))
    reference = teacher_val_acc if teacher_val_acc is not None else \
        (teacher_evals[-1]["val_acc"] if teacher_evals else None)  # the teacher keeps its last weights
    for (model, runs), row in zip(groups.items(), axes):
        for name, h in runs:
            _draw_run(row, name, h)
        if model != "teacher" and reference is not None:
            row[-1].axhline(100 * reference, color="black", lw=1, linestyle="--", label="teacher (validation)")
        _label_row(row, model)
    if not groups:
        axes[0][0].text(0.5, 0.5, "no history to draw", ha="center", va="center", transform=axes[0][0].transAxes)
    fig.suptitle(title if with_loss or not groups else f"{title}\n(a results summary keeps no per-step losses: "
                                                        "the validation passes alone)")
    if with_loss and set(groups) - {"teacher"}:  # under the panels: the levels of two kinds of loss
        fig.supxlabel("loss: the distillation loss for KD runs, cross-entropy for the baseline and pseudo-label "
                      "(their levels do not compare)", fontsize=8)
    return fig


def _label_row(row, model: str) -> None:
    """Titles, axis labels, a grid, and a legend of run names beside the row's last panel."""
    if len(row) > 1:
        row[0].set(xlabel="optimizer step", ylabel="training loss (smoothed)", title=f"{model}: training loss")
    row[-1].set(xlabel="optimizer step", ylabel="validation accuracy (%)",
                title=f"{model}: validation accuracy at each validation pass")
    for ax in row:
        ax.grid(alpha=0.3)
    handles = [line for line in row[-1].lines] or [line for line in row[0].lines]
    if handles:  # beside the panels, not on the curves; run names, as the row's title names the model
        row[-1].legend(handles, [_run_of(h.get_label()) or h.get_label() for h in handles], fontsize=7,
                       loc="upper left", bbox_to_anchor=(1.02, 1))


def accuracy_vs_latency(rows: list[dict], title: str = "Accuracy against latency", split: str = "test"):
    """Each model's accuracy against its p50 batch-1 latency: one colour per run, that of :func:`training_curves`
    (grey: the hard-label baseline; the teacher black), one marker per model (the teacher a star), and the run's
    name beside each point: a model's runs differ by colour alone otherwise, and ten colours hold pairs a
    colour-blind reader cannot tell apart (C1/C8, C0/C4...). Marker area grows with parameters; horizontal bars span
    the latency's interquartile range."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    marker = _model_markers(r["name"] for r in rows)
    for row in rows:
        if row.get("latency_ms") is None:
            continue
        size = 30 + 300 * (row["params"] / max(r["params"] for r in rows))
        ax.scatter(row["latency_ms"], 100 * row["accuracy"], s=size, alpha=0.7, label=row["name"],
                   color=run_colour(row["name"]), marker=marker[row["name"].split()[0]])
        xerr = None
        if row.get("latency_q1_ms") is not None:
            xerr = [[row["latency_ms"] - row["latency_q1_ms"]], [row["latency_q3_ms"] - row["latency_ms"]]]
        if row.get("accuracy_std") or xerr is not None:
            ax.errorbar(row["latency_ms"], 100 * row["accuracy"], xerr=xerr,
                        yerr=100 * row["accuracy_std"] if row.get("accuracy_std") else None, fmt="none",
                        ecolor="gray")
    ax.set(xlabel="p50 latency at batch 1 (ms)", ylabel=f"{split} accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    _name_points(ax, [r for r in rows if r.get("latency_ms") is not None])
    handles, labels = ax.get_legend_handles_labels()
    # beside the axes: inside, "best" placement weighs the markers, not the error bars, and hid the bars' ends
    for handle in fig.legend(handles, labels, fontsize=7, loc="outside right upper").legend_handles:
        handle.set_sizes([40])  # legend markers of one size: the plot's marker area encodes parameters
    note = _caption(rows, split)
    if note:  # what the marker sizes and bars are, on the figure itself: seed spread is not a confidence interval
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=8)
        fig.get_layout_engine().set(rect=(0, 0.045 * (note.count("\n") + 1), 1, 1 - 0.045 * (note.count("\n") + 1)))
    return fig


def _name_points(ax, rows: list[dict], gap: float = 9.0) -> None:
    """Write each point's run (the teacher's name for the teacher) beside it, a label ``gap`` points below any
    label above it that it would overlap: the runs of one student often lie within a few tenths of a point."""
    points = [(r["latency_ms"], 100 * r["accuracy"], _run_of(r["name"]) or r["name"].split()[0]) for r in rows]
    if not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_near = 0.2 * ((max(xs) - min(xs)) or 1.0)  # about a label's width on a figure 9 inches wide
    per_unit = 230 / ((max(ys) - min(ys)) or 1.0)  # points of height per unit of accuracy, about, on 4.5 inches
    placed: list[tuple[float, float]] = []  # (x, height of the label in points)
    for x, y, name in sorted(points, key=lambda p: -p[1]):
        at = y * per_unit + 3
        while any(abs(x - px) < x_near and abs(at - py) < gap for px, py in placed):
            at = min(py for px, py in placed if abs(x - px) < x_near and abs(at - py) < gap) - gap
        placed.append((x, at))
        ax.annotate(name, (x, y), xytext=(5, at - y * per_unit), textcoords="offset points", fontsize=7)


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
    for i, (name, c) in enumerate(curves.items()):  # a marker of its own each: C1 and C2 are near alike to some eyes
        pts = [(x, y) for x, y, n in zip(c["confidence"], c["accuracy"], c["count"]) if n]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=_MARKERS[i % len(_MARKERS)], label=name)
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
