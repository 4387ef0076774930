"""Figures: every one has a title, labelled axes and a legend; multi-seed runs plot one seed."""
import matplotlib

matplotlib.use("Agg")

from kd_tutorial import plots  # noqa: E402


def history(loss: float, steps: int = 10) -> dict:
    return {"steps": [{"step": i + 1, "loss": loss} for i in range(steps)],
            "epochs": [{"step": steps, "val_acc": 0.8}]}


def test_training_curves_draw_one_row_per_model_and_one_colour_per_run():
    """A review: nine runs in two panels, coloured by model and told apart by line style alone, with two kinds of
    loss on one axis, could not be read. One row per model (teacher first), the runs of a row in their own colours."""
    fig = plots.training_curves({"distil-3L kd": history(0.5), "teacher": history(0.3),
                                 "distil-3L baseline": history(0.6), "compact-2L kd": history(0.7)}, title="t")
    assert [ax.get_title() for ax in fig.axes] == [
        "teacher: training loss", "teacher: validation accuracy at each validation pass",
        "distil-3L: training loss", "distil-3L: validation accuracy at each validation pass",
        "compact-2L: training loss", "compact-2L: validation accuracy at each validation pass"]
    lines = {line.get_label(): line for ax in fig.axes[::2] for line in ax.get_lines()}
    assert lines["teacher"].get_color() == "black" and lines["distil-3L baseline"].get_color() == "C7"  # grey
    assert lines["distil-3L kd"].get_color() == lines["compact-2L kd"].get_color() == plots.RUN_COLOUR["kd"]
    assert lines["distil-3L kd"].get_linestyle() != lines["distil-3L baseline"].get_linestyle()
    for ax in fig.axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    assert fig._suptitle.get_text() == "t" and "cross-entropy" in fig._supxlabel.get_text()
    # each student's accuracy panel: its runs, then the teacher's last validation pass as a reference
    assert [line.get_label() for line in fig.axes[3].get_lines()] == ["distil-3L kd", "distil-3L baseline",
                                                                     "teacher (validation)"]
    assert list(fig.axes[3].get_lines()[-1].get_ydata()) == [80.0, 80.0]


def test_each_rows_legend_names_its_runs_beside_the_panels_not_on_the_curves():
    """The tiny profile's nine runs: a legend inside a panel hid compact-1L-H32 baseline's curve from step 105 to
    210. Each row's legend sits right of its panels, and names runs (the row's title names the model)."""
    names = [f"{model} {run}" for model in ("distil-2L", "compact-1L-H32")
             for run in ("baseline", "kd+transfer", "kd+transfer+pkd", "pseudo-label")]
    fig = plots.training_curves({"teacher": history(0.3)} | {name: history(0.5) for name in names},
                                teacher_val_acc=0.9)
    legends = [ax.get_legend() for ax in fig.axes]
    assert legends[0::2] == [None] * 3 and not fig.legends
    assert [t.get_text() for t in legends[3].get_texts()] == ["baseline", "kd+transfer", "kd+transfer+pkd",
                                                              "pseudo-label", "teacher (validation)"]
    assert list(fig.axes[5].get_lines()[-1].get_ydata()) == [90.0, 90.0]  # the reference given, not the history's
    fig.canvas.draw()
    for loss, acc in zip(fig.axes[0::2], fig.axes[1::2]):
        assert acc.get_legend().get_window_extent().x0 >= acc.get_window_extent().x1 > loss.get_window_extent().x1


def test_first_seed_keeps_the_teacher_and_one_seed():
    hs = {"teacher": history(0.3), "a kd s0": history(0.5), "a kd s1": history(0.4), "a kd s2": history(0.45)}
    assert set(plots.first_seed(hs, [0, 1, 2])) == {"teacher", "a kd"}
    assert plots.first_seed(hs, [0, 1, 2])["a kd"] is hs["a kd s0"]
    assert plots.first_seed({"teacher": None, "a kd": hs["a kd s0"]}, [0]) == {"teacher": None, "a kd": hs["a kd s0"]}


def test_accuracy_against_latency_colours_and_marks_runs_as_the_training_curves_do():
    rows = [{"name": "teacher", "accuracy": 0.89, "latency_ms": 35.0, "params": 22e6},
            {"name": "distil-3L kd+transfer", "accuracy": 0.87, "latency_ms": 17.0, "params": 17e6,
             "accuracy_std": 0.01},
            {"name": "distil-3L baseline", "accuracy": 0.86, "latency_ms": 18.0, "params": 17e6},
            {"name": "compact-2L kd+transfer", "accuracy": 0.86, "latency_ms": 4.0, "params": 4e6}]
    fig = plots.accuracy_vs_latency(rows, title="t", split="held-out")
    ax = fig.axes[0]
    points = {c.get_label(): c for c in ax.collections if not c.get_label().startswith("_")}
    colour = {name: tuple(p.get_facecolor()[0][:3]) for name, p in points.items()}
    assert colour["teacher"] == (0.0, 0.0, 0.0)
    assert colour["distil-3L kd+transfer"] == colour["compact-2L kd+transfer"] != colour["distil-3L baseline"]
    assert colour["distil-3L baseline"] == matplotlib.colors.to_rgb("C7")
    # one marker per model: a review found distil-2L's and compact-1L-H32's kd+transfer two identical blue circles
    shape = {name: p.get_paths()[0].vertices.round(3).tobytes() for name, p in points.items()}
    assert shape["distil-3L kd+transfer"] == shape["distil-3L baseline"] != shape["compact-2L kd+transfer"]
    assert len({(colour[n], shape[n]) for n in points}) == len(points) and shape["teacher"] not in (
        shape["distil-3L baseline"], shape["compact-2L kd+transfer"])
    # marker area grows with parameters; the legend shows every marker at one size
    assert points["teacher"].get_sizes()[0] > points["compact-2L kd+transfer"].get_sizes()[0]
    (legend,) = fig.legends  # beside the axes, where it hides no error bar
    assert {tuple(h.get_sizes()) for h in legend.legend_handles} == {(40,)} and ax.get_legend() is None
    fig.canvas.draw()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
    assert ax.get_xlabel() == "p50 latency at batch 1 (ms)" and ax.get_ylabel() == "held-out accuracy (%)"
    assert ax.get_title() == "t"


def test_accuracy_against_latency_names_each_points_run_beside_it():
    """The accessibility review: a model's runs share its marker and differed by colour alone, and with `--recipes
    all` four pairs of runs (C1/C8, C2/C3, C6/C9, C0/C4) look the same to a deuteranope. Each point is labelled."""
    rows = [{"name": "teacher", "accuracy": 0.89, "latency_ms": 35.0, "params": 22e6},
            {"name": "distil-3L kd+transfer", "accuracy": 0.87, "latency_ms": 17.0, "params": 17e6},
            {"name": "distil-3L kd+transfer+cosine", "accuracy": 0.86, "latency_ms": 18.0, "params": 17e6},
            {"name": "distil-3L baseline", "accuracy": 0.80, "latency_ms": None, "params": 17e6}]
    ax = plots.accuracy_vs_latency(rows).axes[0]
    labels = {t.get_text(): t.xy for t in ax.texts}
    assert labels == {"teacher": (35.0, 89.0), "kd+transfer": (17.0, 87.0), "kd+transfer+cosine": (18.0, 86.0)}
    # the cpu record's distil-3L runs lie 0.06 to 0.29 points apart: their labels are stacked, not drawn on each other
    close = [{"name": f"distil-3L {run}", "accuracy": a, "latency_ms": 25.0 + i / 4, "params": 17e6}
             for i, (run, a) in enumerate([("kd+transfer", 0.8687), ("kd+transfer+cosine", 0.8693),
                                           ("pseudo-label", 0.8664), ("baseline", 0.8461)])]
    fig = plots.accuracy_vs_latency(close + [{"name": "teacher", "accuracy": 0.8808, "latency_ms": 47.0,
                                               "params": 22e6}])
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in fig.axes[0].texts]
    assert len(boxes) == 5 and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_training_curves_of_a_results_summary_draw_the_validation_passes():
    """A summary (kd-tutorial report --summary, the committed cpu files) keeps each run's validation passes and not
    its steps: the figure raised KeyError 'steps', then drew an empty loss panel. Now the accuracy panels alone."""
    summary = {"teacher": {"evals": [{"step": 5, "val_acc": 0.85}, {"step": 10, "val_acc": 0.8}]},
               "distil-3L kd": {"evals": [{"step": 5, "val_acc": 0.7}, {"step": 10, "val_acc": 0.75}]}}
    fig = plots.training_curves(summary)
    ax_teacher, ax_student = fig.axes
    assert [line.get_label() for line in ax_teacher.get_lines()] == ["teacher"]
    assert [line.get_label() for line in ax_student.get_lines()] == ["distil-3L kd", "teacher (validation)"]
    assert list(ax_student.get_lines()[-1].get_ydata()) == [80.0, 80.0]  # the teacher's last pass: it keeps those
    assert "no per-step losses" in fig._suptitle.get_text()


def test_a_one_hot_distribution_has_entropy_zero_not_minus_zero():
    import math

    import pytest

    from kd_tutorial import widgets
    assert f"{widgets.entropy([1.0, 0.0]):.2f}" == "0.00"
    assert widgets.entropy([0.5, 0.5]) == pytest.approx(math.log(2))  # the value, not only the one-hot's sign
    assert widgets.entropy([0.5, 0.25, 0.25]) == pytest.approx(1.5 * math.log(2))
    assert "entropy 0.00 of max" in widgets.plot_temperature([100.0, 0.0], 0.1).get_title()


def test_the_uniform_line_is_labelled_with_its_value_to_three_digits():
    """With C = 8 classes the legend read "uniform 1/C = 0.12" for 0.125 (two decimals)."""
    import matplotlib.pyplot as plt

    from kd_tutorial import widgets
    for logits, label in (([0.0] * 8, "uniform 1/C = 0.125"), ([0.0] * 3, "uniform 1/C = 0.333")):
        ax = widgets.plot_temperature(logits, 1.0)
        assert label in [t.get_text() for t in ax.get_legend().get_texts()]
        plt.close(ax.figure)


def test_the_temperature_explorer_refuses_wrong_class_names_at_once_and_starts_at_t_min():
    """A wrong number of names was refused only inside the widget's first draw, where the error is hidden; and a
    slider starting at its leftmost position (value == t_min) was refused."""
    import pytest

    from kd_tutorial import widgets
    with pytest.raises(ValueError, match="2 class names for 3 logits"):
        widgets.temperature_explorer([1.0, 2.0, 3.0], ["a", "b"])
    with pytest.raises(ValueError, match="highlight=5: give the index of one of the 2 classes"):
        widgets.temperature_explorer([1.0, 2.0], highlight=5)
    slider = widgets.temperature_explorer([1.0, 2.0], t_min=1.0, value=1.0).children[0]
    assert slider.value == pytest.approx(1.0) and 10 ** slider.min == pytest.approx(1.0)  # at its leftmost position


def test_accuracy_against_latency_says_what_its_bars_are():
    """A three-seed run (kd-tutorial distill --seeds 0 1 2) drew vertical bars of ± 1 std over the seeds and
    horizontal bars of the latency's interquartile range, and nothing on the figure said so: a learner read them
    as confidence intervals."""
    rows = [{"name": "teacher", "accuracy": 0.88, "latency_ms": 34.0, "latency_q1_ms": 28.0, "latency_q3_ms": 38.0,
             "params": 22e6, "accuracy_std": 0.0, "seeds": 1},
            {"name": "distil-3L baseline", "accuracy": 0.77, "latency_ms": 3.4, "latency_q1_ms": 3.2,
             "latency_q3_ms": 3.8, "params": 4e6, "accuracy_std": 0.02, "seeds": 3}]
    fig = plots.accuracy_vs_latency(rows, split="test")
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "horizontal bars: latency p25-p75" in caption
    assert "marker area grows with the number of parameters" in caption  # the docstring said so, the figure did not
    assert "vertical bars: test accuracy ± 1 std over 3 seeds" in caption
    from matplotlib.collections import LineCollection
    segments = [seg for c in fig.axes[0].collections if isinstance(c, LineCollection) for seg in c.get_segments()]
    vertical = [seg[:, 1].round(6).tolist() for seg in segments if seg[0][0] == seg[1][0]]
    assert vertical == [[75.0, 79.0]]  # 77 ± 2 points: the std, drawn as the caption says
    one_seed = plots.accuracy_vs_latency([rows[0]], split="test")
    assert "vertical" not in " ".join(t.get_text() for t in one_seed.texts)


def test_training_curves_tell_every_run_apart_by_marker_too():
    """The cpu profile's figure drew distil-3L baseline (":") and kd+transfer+cosine (densely dotted) as two blue dotted
    lines with one marker, "o": a learner could not tell which curve was the baseline."""
    fig = plots.training_curves({"distil-3L baseline": history(0.6), "distil-3L kd+transfer+cosine": history(0.5)})
    for ax in fig.axes:
        marker = {line.get_label(): line.get_marker() for line in ax.get_lines()}
        assert marker == {"distil-3L baseline": plots.RUN_MARKER["baseline"],
                          "distil-3L kd+transfer+cosine": plots.RUN_MARKER["kd+transfer+cosine"]}
        assert len(set(marker.values())) == 2


def test_a_plot_the_disk_refuses_is_one_storage_error_and_leaves_no_cut_png(tmp_path, monkeypatch):
    """Before: a full disk while `distill` saved its plots (after results.json) was an OSError traceback, and the PNG
    was left cut short under its own name. Now it is one StorageError, and the earlier PNG stays whole."""
    import contextlib
    import errno
    from pathlib import Path

    import pytest
    from matplotlib.figure import Figure
    from kd_tutorial.store import StorageError

    def full(self, fname, **kwargs):
        with open(fname, "wb") if isinstance(fname, (str, Path)) else contextlib.nullcontext(fname) as f:
            f.write(b"\x89PNG half")  # a cut PNG, to a path (as before) or a file object
        raise OSError(errno.ENOSPC, "No space left on device")
    (tmp_path / "training_curves.png").write_bytes(b"an earlier plot")
    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(StorageError, match="no space left on the disk; free some space"):
        plots.save(plots.training_curves({"teacher": history(0.5)}), tmp_path / "training_curves.png")
    assert [p.name for p in tmp_path.iterdir()] == ["training_curves.png"]
    assert (tmp_path / "training_curves.png").read_bytes() == b"an earlier plot"
