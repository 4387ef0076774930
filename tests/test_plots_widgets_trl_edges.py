"""Edges of the figures, the temperature widgets and the TRL path (kd_tutorial.plots, .widgets, .lm_trl).

What a learner reads off a figure: the values drawn (smoothed losses, accuracies in %, latency bars, marker areas),
the axes and captions, which runs and seeds the pipeline's PNGs show; what the temperature views draw and refuse;
and that run_gkd hands the user's settings to GKDTrainer and refuses, in one line, sample lengths the models cannot
read. The TRL tests skip when TRL is not installed (the optional ``trl`` extra).
"""
import math
import os
import re

import matplotlib
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from kd_tutorial import plots, widgets  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _history(losses, evals=((10, 0.8),)):
    return {"steps": [{"step": i + 1, "loss": loss} for i, loss in enumerate(losses)],
            "evals": [{"step": s, "val_acc": a} for s, a in evals]}


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


# ---------------------------------------------------------------------------------------------------- training curves

def test_the_loss_curve_is_the_trailing_mean_of_the_logged_losses():
    """100 steps: a window of 2 steps (len // 50), the first point its own mean; x is the optimizer step."""
    fig = plots.training_curves({"distil-3L kd": _history([float(i + 1) for i in range(100)])})
    line = _lines(fig.axes[0])["distil-3L kd"]
    assert list(line.get_xdata()) == list(range(1, 101))
    assert list(line.get_ydata()) == [1.0] + [i + 0.5 for i in range(1, 100)]


def test_validation_accuracy_is_drawn_in_percent_at_its_optimizer_step():
    fig = plots.training_curves({"teacher": _history([0.5] * 4, evals=((2, 0.75), (4, 0.8)))})
    ax_loss, ax_acc = fig.axes
    line = _lines(ax_acc)["teacher"]
    assert list(line.get_xdata()) == [2, 4] and list(line.get_ydata()) == pytest.approx([75.0, 80.0])
    assert ax_loss.get_xlabel() == ax_acc.get_xlabel() == "optimizer step"
    assert ax_acc.get_ylabel() == "validation accuracy (%)"


def test_a_missing_teacher_history_and_epochs_without_validation_are_skipped():
    """A cached teacher has no history (None), and a run without validation logs epochs without val_acc."""
    no_validation = {"steps": [{"step": 1, "loss": 0.7}],
                     "epochs": [{"step": 1, "train_loss": 0.7}, {"step": 2, "val_acc": None}]}
    with_epochs = {"steps": [], "epochs": [{"step": 3, "val_acc": None}, {"step": 6, "val_acc": 0.5}]}
    fig = plots.training_curves({"teacher": None, "distil-3L kd": no_validation, "distil-3L baseline": with_epochs})
    ax_loss, ax_acc = fig.axes
    assert list(_lines(ax_loss)) == ["distil-3L kd"]
    assert {name: list(line.get_ydata()) for name, line in _lines(ax_acc).items()} == {"distil-3L baseline": [50.0]}
    assert list(_lines(ax_acc)["distil-3L baseline"].get_xdata()) == [6]


def test_every_recipe_of_one_model_has_its_own_colour_style_and_marker_and_the_teacher_none():
    """One row per model, its runs told apart by colour, line style and marker, none of them the teacher's black."""
    runs = list(plots.RUN_STYLE)
    fig = plots.training_curves({"teacher": _history([0.3])} | {f"distil-3L {run}": _history([0.5]) for run in runs})
    lines = _lines(fig.axes[0]) | _lines(fig.axes[2])
    assert len({repr(style) for style in plots.RUN_STYLE.values()}) == len(runs)
    assert len({lines[f"distil-3L {run}"].get_marker() for run in runs}) == len(runs)
    assert len({lines[f"distil-3L {run}"].get_color() for run in runs} | {"black"}) == len(runs) + 1
    assert (lines["teacher"].get_linestyle(), lines["teacher"].get_marker()) == ("-", "o")


# ------------------------------------------------------------------------------------------- accuracy against latency

ROWS = [{"name": "teacher", "accuracy": 0.88, "latency_ms": 34.0, "latency_q1_ms": 28.0, "latency_q3_ms": 38.0,
         "params": 20e6, "accuracy_std": 0.0},
        {"name": "distil-3L kd", "accuracy": 0.8, "latency_ms": 4.0, "params": 5e6}]


def _points(fig):
    return {c.get_label(): c for c in fig.axes[0].collections if not c.get_label().startswith("_")}


def _segments(fig):
    return [seg.round(6).tolist() for c in fig.axes[0].collections if isinstance(c, LineCollection)
            for seg in c.get_segments()]


def test_each_model_is_drawn_at_its_latency_and_accuracy_in_percent_with_its_parameter_area():
    points = _points(plots.accuracy_vs_latency(ROWS))
    assert points["teacher"].get_offsets().tolist() == [[34.0, 88.0]]
    assert points["distil-3L kd"].get_offsets().tolist() == [[4.0, 80.0]]
    assert points["teacher"].get_sizes()[0] == pytest.approx(330)  # the largest model: 30 + 300
    assert points["distil-3L kd"].get_sizes()[0] == pytest.approx(30 + 300 * 5 / 20)


def test_the_latency_bar_spans_p25_to_p75_even_for_a_model_without_seed_spread():
    """The teacher (one seed, accuracy_std 0) still has its latency's interquartile range drawn."""
    assert _segments(plots.accuracy_vs_latency(ROWS)) == [[[28.0, 88.0], [38.0, 88.0]]]


def test_a_model_without_a_latency_is_left_out_of_the_figure_and_its_caption():
    rows = ROWS + [{"name": "compact-2L kd", "accuracy": 0.7, "latency_ms": None, "params": 1e6}]
    fig = plots.accuracy_vs_latency(rows)
    assert set(_points(fig)) == {"teacher", "distil-3L kd"}
    one = plots.accuracy_vs_latency([ROWS[1], rows[2]])  # one drawn model: one size, no bars, no caption
    assert set(_points(one)) == {"distil-3L kd"} and one.texts == []


def test_the_caption_says_marker_area_only_when_sizes_differ_and_counts_seeds_only_when_known():
    same_size = [dict(row, params=5e6) for row in ROWS]
    caption = " ".join(t.get_text() for t in plots.accuracy_vs_latency(same_size).texts)
    assert "marker area" not in caption and "horizontal bars: latency p25-p75" in caption
    no_count = [ROWS[0], dict(ROWS[1], accuracy_std=0.01)]  # rows without a "seeds" key
    caption = " ".join(t.get_text() for t in plots.accuracy_vs_latency(no_count, split="validation").texts)
    assert "vertical bars: validation accuracy ± 1 std over seeds" in caption and "0 seeds" not in caption


def test_one_row_with_interquartile_bars_is_enough_for_the_caption_to_say_so():
    rows = [ROWS[1], ROWS[0]]  # the first row has no latency_q1_ms
    assert "horizontal bars" in " ".join(t.get_text() for t in plots.accuracy_vs_latency(rows).texts)


# -------------------------------------------------------------------------------------------- reliability diagram

def test_the_reliability_diagram_draws_accuracy_against_confidence_of_the_non_empty_bins():
    curves = {"student": {"confidence": [0.55, 0.65, 0.95], "accuracy": [0.5, 0.0, 0.9], "count": [10, 0, 30]}}
    ax = plots.reliability_diagram(curves).axes[0]
    lines = _lines(ax)
    assert list(lines["perfect calibration"].get_xydata().tolist()) == [[0, 0], [1, 1]]
    assert lines["student"].get_xydata().tolist() == [[0.55, 0.5], [0.95, 0.9]]
    assert ax.get_xlabel() == "confidence (max probability)" and ax.get_ylabel() == "accuracy"


def test_each_reliability_curve_has_a_marker_of_its_own():
    """The accessibility review: curves told apart by colour alone; a third one (C2) is near C1 to a deuteranope."""
    curve = {"confidence": [0.6, 0.9], "accuracy": [0.5, 0.9], "count": [5, 5]}
    lines = _lines(plots.reliability_diagram({"teacher": curve, "student": curve, "another": curve}).axes[0])
    assert len({lines[name].get_marker() for name in ("teacher", "student", "another")}) == 3


# ---------------------------------------------------------------------------------------------- saving and pipeline

def test_save_writes_a_png_at_120_dpi_closes_the_figure_and_returns_a_json_ready_path(tmp_path):
    fig = plots.reliability_diagram({})  # 5 x 5 inches
    saved = plots.save(fig, tmp_path / "r.png")
    assert saved == str(tmp_path / "r.png") and isinstance(saved, str)  # results.json lists it
    assert not plt.fignum_exists(fig.number)  # a notebook or a long run does not pile up open figures
    header = (tmp_path / "r.png").read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")) == (600, 600)


def test_two_seeds_plot_the_first_seed_only():
    hs = {"teacher": _history([0.3]), "a kd s3": _history([0.5]), "a kd s4": _history([0.4])}
    assert plots.first_seed(hs, [3, 4]) == {"teacher": hs["teacher"], "a kd": hs["a kd s3"]}


def _results(seeds, evaluated_on="validation"):
    histories = {"teacher": None} | {f"distil-3L kd s{s}": _history([0.5, 0.4]) for s in seeds}
    models = [{"name": "teacher", "accuracy": 0.9, "latency_ms": 30.0, "params": 20e6},
              {"name": "distil-3L kd", "accuracy": 0.8, "latency_ms": 5.0, "params": 5e6}]
    return {"run": {"evaluated_on": evaluated_on, "profile": "tiny", "seeds": seeds, "device": "cpu"},
            "histories": histories, "models": models}


def test_the_pipeline_plots_name_profile_seed_split_and_device_in_the_right_files(tmp_path, monkeypatch):
    """Which figure goes to which PNG, and what its titles and axes say (the PNGs themselves: test_pipeline)."""
    saved = {}

    def recording(fig, path):
        saved[os.path.basename(path)] = fig
        return str(path)
    monkeypatch.setattr(plots, "save", recording)
    paths = plots.save_pipeline_plots(_results([7, 8]), tmp_path)
    assert paths == [str(tmp_path / name) for name in plots.PIPELINE_PLOTS]
    curves, latency = saved["training_curves.png"], saved["accuracy_vs_latency.png"]
    assert curves._suptitle.get_text() == "Training curves (tiny profile, seed 7 of 2)"
    assert [line.get_label() for line in curves.axes[0].get_lines()] == ["distil-3L kd"]  # seed 7's, renamed
    (ax,) = latency.axes
    assert ax.get_title() == "Accuracy against latency (tiny profile, device cpu)"
    assert ax.get_ylabel() == "validation accuracy (%)"  # the split the models were evaluated on
    plots.save_pipeline_plots(_results([7]), tmp_path)
    assert saved["training_curves.png"]._suptitle.get_text() == "Training curves (tiny profile)"


def test_figures_use_agg_in_scripts_and_keep_a_notebooks_backend(monkeypatch):
    """Outside IPython no display is needed (Agg); inside a notebook the kernel's inline backend must stay."""
    import IPython
    chosen = []
    monkeypatch.setattr(matplotlib, "use", lambda backend, *a, **k: chosen.append(backend))
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    plots.reliability_diagram({})
    assert chosen == ["Agg"]
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    plots.reliability_diagram({})
    assert chosen == ["Agg"]


# ---------------------------------------------------------------------------------------------------------- widgets

def test_softened_divides_the_logits_by_the_temperature():
    z = [0.0, 2 * math.log(3)]
    assert widgets.softened(z, 2.0) == pytest.approx([0.25, 0.75])
    assert widgets.softened(z, 1.0) == pytest.approx([0.1, 0.9])


@pytest.mark.parametrize("logits, shape", [([[1.0, 2.0], [3.0, 4.0]], "(2, 2)"), ([1.0], "(1,)"), (3.0, "()")])
def test_anything_but_one_vector_of_two_or_more_logits_is_refused(logits, shape):
    with pytest.raises(ValueError, match=f"expected one vector of at least 2 logits, got shape {re.escape(shape)}"):
        widgets.softened(logits, 1.0)


def test_the_bar_chart_draws_the_softened_probabilities_against_the_uniform_line():
    ax = widgets.plot_temperature([0.0, 2 * math.log(3)], 2.0, highlight=1)
    assert [bar.get_height() for bar in ax.patches] == pytest.approx([0.25, 0.75])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["class 0", "class 1"]  # the indices highlight takes
    colours = [matplotlib.colors.to_hex(bar.get_facecolor()) for bar in ax.patches]
    assert colours == [matplotlib.colors.to_hex("tab:blue"), matplotlib.colors.to_hex("tab:red")]
    assert [bar.get_hatch() for bar in ax.patches] == [None, "//"]  # told apart in greyscale too (the a11y review)
    (uniform,) = [line for line in ax.get_lines() if line.get_label().startswith("uniform")]
    assert list(uniform.get_ydata()) == [0.5, 0.5]
    assert ax.get_ylim() == (0.0, 1.0)  # one scale whatever T: flatter bars are visibly lower
    assert ax.get_title() == f"T = 2: entropy {widgets.entropy([0.25, 0.75]):.2f} of max 0.69 nats"
    assert widgets.plot_temperature([0.0, 1.0], 1.58).get_title().startswith("T = 1.58: ")


def test_the_grid_has_one_panel_per_temperature_even_for_one():
    fig = widgets.plot_temperature_grid([0.0, 2 * math.log(3)], (2,), highlight=0)
    (ax,) = fig.axes
    assert ax.get_title() == f"T = 2  (H = {widgets.entropy([0.25, 0.75]):.2f} nats)"
    assert ax.get_ylabel() == "probability"
    colours = [matplotlib.colors.to_hex(bar.get_facecolor()) for bar in ax.patches]
    assert colours[0] == matplotlib.colors.to_hex("tab:red") != colours[1]


def test_the_grid_labels_the_shared_probability_axis_once():
    fig = widgets.plot_temperature_grid([0.0, 1.0], (1, 4))
    assert [ax.get_ylabel() for ax in fig.axes] == ["probability", ""]
    assert fig.axes[1].get_title().startswith("T = 4  (H = ")
    assert fig.axes[0].get_title() != fig.axes[1].get_title()


@pytest.mark.parametrize("kwargs, message", [
    (dict(t_min=0.0), "need 0 < t_min <= value <= t_max, got 0.0, 1.0, 20.0"),
    (dict(value=30.0), "need 0 < t_min <= value <= t_max, got 0.1, 30.0, 20.0"),
    (dict(highlight=-1), "highlight=-1: give the index of one of the 2 classes"),
    (dict(highlight=2), "highlight=2: give the index of one of the 2 classes"),
])
def test_the_explorer_refuses_a_bad_range_or_highlight_at_once(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        widgets.temperature_explorer([1.0, 2.0], **kwargs)


def test_the_explorer_slider_spans_t_min_to_t_max_and_redraws_at_the_chosen_temperature():
    view = widgets.temperature_explorer([0.0, 2 * math.log(3)], t_min=0.5, t_max=8.0, value=2.0, highlight=0)
    slider = view.children[0]
    assert (10 ** slider.min, slider.value, 10 ** slider.max) == pytest.approx((0.5, 2.0, 8.0))
    ax = plt.gcf().axes[0]  # the first draw, at the slider's value
    assert ax.get_title().startswith("T = 2: ") and [b.get_height() for b in ax.patches] == pytest.approx([0.25, 0.75])
    slider.value = 1.0
    ax = plt.gcf().axes[0]
    assert ax.get_title().startswith("T = 1: ") and [b.get_height() for b in ax.patches] == pytest.approx([0.1, 0.9])
    assert matplotlib.colors.to_hex(ax.patches[0].get_facecolor()) == matplotlib.colors.to_hex("tab:red")


# ------------------------------------------------------------------------------------------------------------ TRL

@pytest.fixture
def trl_parts():
    """A word tokenizer, its rows, and two GPT-2s (48 positions) of its vocabulary; no training."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    pytest.importorskip("trl")
    from kd_tutorial import lm
    texts = ["a great movie , i loved it .", "a bad film and a long one .", "it was fine , not great ."] * 4
    tok = lm.WordTokenizer(texts)
    rows = [tok.encode(t) for t in texts]
    return tok, rows, lm.gpt(len(tok), 1, 16, 2, 48, seed=0), lm.gpt(len(tok), 1, 16, 2, 48, seed=1)


@pytest.fixture
def recorded_config(monkeypatch):
    """GKDTrainer as run_gkd builds it, its training skipped: the config it was given."""
    from trl.experimental import gkd
    seen = {}

    class Recording(gkd.GKDTrainer):
        def train(self, *args, **kwargs):
            seen["args"] = self.args

    monkeypatch.setattr(gkd, "GKDTrainer", Recording)
    return seen


def test_run_gkd_hands_the_users_settings_and_the_courses_schedule_to_gkd(trl_parts, recorded_config, tmp_path):
    from kd_tutorial import lm_trl
    tok, rows, teacher, student = trl_parts
    lm_trl.run_gkd(teacher, student, rows, tok, steps=20, lmbda=0.25, beta=0.75, lr=2e-3, batch_size=3,
                   prompt_tokens=2, max_new_tokens=7, seed=5, output_dir=str(tmp_path))
    args = recorded_config["args"]
    assert (args.max_steps, args.lmbda, args.beta, args.learning_rate, args.per_device_train_batch_size,
            args.max_new_tokens, args.seed) == (20, 0.25, 0.75, 2e-3, 3, 7, 5)
    assert args.output_dir == str(tmp_path) and list(tmp_path.iterdir()) == []  # given, and left empty
    # the course's schedule: AdamW with weight decay 0.01, 10 % warm-up then linear decay, clipping at 1, T = 1
    assert (args.weight_decay, args.warmup_steps, args.lr_scheduler_type, args.max_grad_norm,
            args.temperature) == (0.01, 2, "linear", 1.0, 1.0)


def test_run_gkd_prints_nothing_while_it_trains(trl_parts, capsys):
    from kd_tutorial import lm_trl
    tok, rows, teacher, student = trl_parts
    _, losses = lm_trl.run_gkd(teacher, student, rows, tok, steps=2, lmbda=0.0, lr=1e-3, batch_size=4,
                               prompt_tokens=2, max_new_tokens=4)
    assert len(losses) == 2
    assert capsys.readouterr().out == ""


def test_the_gkd_dataset_drops_a_row_that_is_all_prompt(trl_parts):
    """A row of exactly prompt_tokens tokens has nothing to score: no example (checked with run_gkd's data)."""
    from kd_tutorial import lm_trl
    tok, rows, _, _ = trl_parts
    dataset = lm_trl.gkd_dataset([rows[0][:3], rows[0][:4]], 3, tok)
    assert dataset["input_ids"] == [rows[0][:4]] and dataset["completion_mask"] == [[0, 0, 0, 1]]


def test_run_gkd_refuses_a_prompt_that_fills_the_models_positions(trl_parts):
    from kd_tutorial import lm_trl
    tok, rows, teacher, student = trl_parts
    with pytest.raises(ValueError, match="prompt_tokens=48 leaves no room to write: the models read 48 positions; "
                                         "give prompt_tokens <= 47"):
        lm_trl.run_gkd(teacher, student, rows, tok, steps=1, lr=1e-3, batch_size=4, prompt_tokens=48,
                       max_new_tokens=1)


def test_run_gkd_measures_lengths_against_the_shorter_of_teacher_and_student(trl_parts):
    """The teacher scores every sample too: a teacher of 32 positions cannot read a 40-token sample."""
    from kd_tutorial import lm, lm_trl
    tok, rows, _, student = trl_parts
    short_teacher = lm.gpt(len(tok), 1, 16, 2, 32)
    with pytest.raises(ValueError, match="prompt_tokens=2 \\+ max_new_tokens=38 exceeds the 32 positions the models "
                                         "read: give max_new_tokens <= 30"):
        lm_trl.run_gkd(short_teacher, student, rows, tok, steps=1, lr=1e-3, batch_size=4, prompt_tokens=2,
                       max_new_tokens=38)


def _llamas(vocab_size):
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(config), LlamaForCausalLM(config)


def test_run_gkd_reads_the_positions_of_a_model_without_n_positions(trl_parts):
    """A Llama-style config names its positions max_position_embeddings (GPT-2's n_positions)."""
    from kd_tutorial import lm_trl
    tok, rows, _, _ = trl_parts
    teacher, student = _llamas(len(tok))
    with pytest.raises(ValueError, match="exceeds the 32 positions the models read: give max_new_tokens <= 30"):
        lm_trl.run_gkd(teacher, student, rows, tok, steps=1, lr=1e-3, batch_size=4, prompt_tokens=2,
                       max_new_tokens=31)


def test_run_gkd_accepts_a_model_without_n_positions_that_its_checks_accept(trl_parts, recorded_config):
    """run_gkd read student.config.n_positions, which a Llama-style config lacks (AttributeError), after
    _check_lengths had accepted its max_position_embeddings."""
    from kd_tutorial import lm_trl
    tok, rows, _, _ = trl_parts
    teacher, student = _llamas(len(tok))
    lm_trl.run_gkd(teacher, student, rows, tok, steps=1, lr=1e-3, batch_size=4, prompt_tokens=2, max_new_tokens=4)
    assert recorded_config["args"].max_length == 32


def test_run_gkd_pads_and_samples_to_the_positions_both_models_read(trl_parts, recorded_config):
    """A teacher that reads 32 positions beside a student of 48: GKD's max_length was the student's alone, so a
    sample the collator let through could run past the teacher's positions."""
    from kd_tutorial import lm, lm_trl
    tok, rows, _, student = trl_parts
    short_teacher = lm.gpt(len(tok), 1, 16, 2, 32, seed=0)
    lm_trl.run_gkd(short_teacher, student, rows, tok, steps=1, lr=1e-3, batch_size=4, prompt_tokens=2,
                   max_new_tokens=4)
    assert recorded_config["args"].max_length == 32


@pytest.mark.parametrize("draw", ["plot_temperature", "plot_temperature_grid"])
def test_the_static_plots_refuse_a_highlight_that_is_no_class_as_the_explorer_does(draw):
    """They drew every bar plain, as if no class had been asked for (the explorer refused it)."""
    args = (2.0,) if draw == "plot_temperature" else ()
    with pytest.raises(ValueError, match=r"^highlight=2: give the index of one of the 2 classes$"):
        getattr(widgets, draw)([0.0, 1.0], *args, highlight=2)


def test_a_grid_of_no_temperatures_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^plot_temperature_grid needs at least one temperature, e\.g\. "):
        widgets.plot_temperature_grid([0.0, 1.0], ())  # matplotlib's "Number of columns must be a positive integer"
