"""Edges of the scores and of their rendering, found by a mutation audit of kd_tutorial/evaluate.py and
kd_tutorial/report.py: a confidence on a bin edge, a teacher right on few reviews, a split of one batch or none,
inputs the statistics refuse, and the numbers, signs and sentences the results table and README block print."""
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kd_tutorial import data, evaluate, report
from kd_tutorial.evaluate import expected_calibration_error, paired_bootstrap, reliability_curve, teacher_share


# ----------------------------------------------------------------------------- evaluate: scores and statistics


def test_a_confidence_on_a_bin_edge_counts_in_one_bin_only():
    """Two tied logits give a confidence of exactly 0.5, the edge between bins 4 and 5: counted in both, the
    rows weighed twice and the ECE read 1.0 (above any gap a confidence can have)."""
    tied = torch.zeros(2, 2)  # both rows predict class 0 at 0.5, and both are wrong
    assert expected_calibration_error(tied, [1, 1]) == pytest.approx(0.5)
    curve = reliability_curve(tied, [1, 1])
    assert curve["count"] == [0, 0, 0, 0, 2, 0, 0, 0, 0, 0]
    assert curve["confidence"][4] == pytest.approx(0.5) and curve["accuracy"][4] == 0.0


def test_the_ece_bins_are_ten_tenths_of_confidence():
    """Confidences of 0.52 (right) and 0.58 (wrong) share the bin (0.5, 0.6]: its accuracy 0.5 against its confidence
    0.55 is the whole ECE. Nine bins, whose edge at 0.556 parts them, gave 0.55."""
    logits = torch.tensor([[0.52, 0.48], [0.58, 0.42]], dtype=torch.float64).log()
    assert expected_calibration_error(logits, [0, 1]) == pytest.approx(0.05)


def test_the_share_interval_leaves_out_resamples_where_the_teacher_gets_nothing_right():
    """A teacher right on 1 review of 3: a resample misses it 30 % of the time and has no share. Counted as a
    share of infinity (or nan), the interval's upper bound read inf (or both bounds nan)."""
    student, teacher = torch.tensor([True, True, True]), torch.tensor([True, False, False])
    out = teacher_share(student, teacher, n_boot=2000)
    # the kept resamples hold the teacher's review 1, 2 or 3 times: a share of 3 / 1, 3 / 2 or 3 / 3
    assert out["share"] == 3.0 and (out["ci_low"], out["ci_high"]) == (1.0, 3.0)


@pytest.mark.parametrize("call, match", [
    (lambda a, b: paired_bootstrap(a, b, level=1.0), "fraction strictly between 0 and 1"),
    (lambda a, b: teacher_share(a, a | b, level=1), "fraction strictly between 0 and 1"),
    (lambda a, b: paired_bootstrap(a, b, n_boot=100.0), "n_boot is how many resamples to draw, at least 1"),
    (lambda a, b: evaluate.compare_paired(a, b, n_boot=1e4), "got 10000.0")])
def test_a_level_of_one_and_a_count_of_resamples_that_is_no_whole_number_are_refused_in_one_line(call, match):
    """level=1 asks for an interval of every resample and a p below 0; n_boot=1e4 (a float) failed inside torch."""
    a = torch.tensor([True] * 8 + [False] * 4)
    b = torch.tensor([True] * 5 + [False] * 7)
    with pytest.raises(ValueError, match=match) as error:
        call(a, b)
    assert "\n" not in str(error.value)


class _Lengths(torch.nn.Module):
    """A stand-in classifier whose logits are each row's length (its real tokens) and its second token."""

    config = SimpleNamespace(max_position_embeddings=64, num_labels=2)

    def forward(self, input_ids, attention_mask, **kwargs):
        real = attention_mask.reshape(len(input_ids), -1).sum(-1).float()
        return SimpleNamespace(logits=torch.stack([real, input_ids[:, 1].float()], -1), hidden_states=None)


def test_predicted_logits_come_back_in_row_order_whatever_order_the_batches_ran_in():
    """predict_logits batches rows of like length together (longest first): each row's logits must still land on
    its own row, or every score pairs one review's answer with another's label."""
    rows = [[101, 1000 + i, *[7] * (i * 3 % 5), 102] for i in range(7)]
    enc = data.Encoded(rows, torch.zeros(7, dtype=torch.long), "seven")
    out = evaluate.predict_logits(_Lengths(), enc, batch_size=2, device="cpu", precision="fp32")
    assert out[:, 0].tolist() == [float(len(r)) for r in rows]
    assert out[:, 1].tolist() == [1000.0 + i for i in range(7)]


def test_an_empty_split_is_refused_where_its_logits_are_predicted():
    empty = data.Encoded([], torch.zeros(0, dtype=torch.long), "test")
    with pytest.raises(ValueError, match=r"^predict: no reviews to predict \(the split 'test' is empty\)$"):
        evaluate.predict_logits(_Lengths(), empty, device="cpu", precision="fp32")


def test_the_throughput_of_a_split_of_one_batch_times_that_batch(monkeypatch):
    """With one batch there is no warm-up batch to leave out: the batch is timed (skipped, the rate divided by 0)."""
    monkeypatch.setattr(evaluate, "_forward_ms", lambda *a, **kw: 250.0)
    enc = data.Encoded([[101, 5, 102], [101, 5, 6, 102]], torch.zeros(2, dtype=torch.long), "two")
    out = evaluate.throughput(torch.nn.Identity(), enc, device="cpu", batch_size=64, precision="fp32")
    assert out["reviews_per_s"] == pytest.approx(8.0) and out["tokens_per_s"] == pytest.approx(28.0)
    assert sorted(out["lengths"]) == [3, 4]


def test_compare_scores_each_model_on_its_own_logits_against_the_labels_and_the_teacher(monkeypatch):
    """Hand-computed rows: the student right on 3 of 4 reviews, each at a confidence of sigmoid(1) = 0.731, agrees
    with the (always right) teacher on those 3; its ECE is |0.75 - 0.731|, the teacher's |1 - 0.731|."""
    monkeypatch.setattr(evaluate, "_forward_ms", lambda *a, **kw: 2.0)  # a stand-in clock: no timing asserted
    enc = data.Encoded([[101, 1000 + i, 102] for i in range(4)], torch.tensor([0, 1, 0, 1]), "four")
    right = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    student = right.clone()
    student[3] = torch.tensor([1.0, 0.0])
    rows = evaluate.compare({"teacher": _Lengths(), "s": _Lengths()}, enc, logits={"teacher": right, "s": student},
                            latency_n=2, latency_repeats=1, throughput_batches=1, precision="fp32")
    confidence = 1 / (1 + math.exp(-1))
    assert [r["name"] for r in rows] == ["teacher", "s"]
    assert (rows[0]["accuracy"], rows[0]["agreement"]) == (1.0, 1.0)
    assert (rows[1]["accuracy"], rows[1]["agreement"]) == (0.75, 0.75)
    assert rows[0]["ece"] == pytest.approx(1 - confidence) and rows[1]["ece"] == pytest.approx(0.75 - confidence)
    alone = evaluate.compare({"s": _Lengths()}, enc, logits={"s": student}, latency_n=2, latency_repeats=1,
                             throughput_batches=1, precision="fp32")
    assert alone[0]["agreement"] is None  # no teacher in the comparison: nothing to agree with


# ----------------------------------------------------------------------------- report: the console table


def _model_row(**changes) -> dict:
    return {"name": "s kd", "accuracy": 0.72, "agreement": 0.9, "ece": 0.05, "params": 1.5e6, "mb": 6.0,
            "latency_ms": 1.0, "reviews_per_s": 300.0} | changes


def test_a_measured_zero_prints_as_zero_not_as_unmeasured():
    """A model that never agrees with the teacher, or a zero ECE, is a measurement: "-" is for a missing one."""
    table = report.format_table([_model_row(agreement=0.0, ece=0.0), _model_row(agreement=None)])
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert cells[0][2:4] == ["0.00", "0.000"] and cells[1][2] == "-"


def test_the_console_table_is_aligned_and_keeps_its_title():
    table = report.format_table([_model_row(name="a much longer model name")], title="results")
    lines = table.splitlines()
    assert lines[0] == "results" and len({len(line) for line in lines[1:]}) == 1
    assert lines[3] == "| a much longer model name | 72.00 | 90.00   | 0.050 | 1.50     | 6.0 | 1.00   | 300       |"


# ----------------------------------------------------------------------------- report: the comparisons table


def _comparison(**changes) -> dict:
    return {"student": "s", "recipe": "kd", "against": "baseline", "diff": 0.004, "ci_low": 0.001, "ci_high": 0.008,
            "p_mcnemar": 0.0496} | changes


def test_a_difference_that_rounds_to_a_hundredth_of_a_point_or_more_keeps_two_decimals():
    """One significant digit is for a bound that 2 decimals would print as 0.00, nearer 0 than 0.005 points."""
    assert [report.format_points(x) for x in (0.00007, -0.00003, 0.0002, 0.0123)] == \
        ["+0.01", "-0.003", "+0.02", "+1.23"]


def test_a_p_value_and_verdict_without_a_recorded_level_are_read_at_95_percent():
    """Files from before the level was recorded: p = 0.07 is no verdict at 95 %, and prints with 2 digits."""
    line = report.format_comparisons([_comparison(p_mcnemar=0.07, verdict="no detectable difference at this size")])
    assert line.splitlines()[2] == \
        "| s | kd | baseline | +0.40 | [+0.10, +0.80] | 0.07 | no detectable difference at this size |"
    line = report.format_comparisons([_comparison(verdict="better")]).splitlines()[2]
    assert line == "| s | kd | baseline | +0.40 | [+0.10, +0.80] | 0.0496 | better |"  # 0.05 at 90 %
    assert report.format_p(0.0496) == "0.0496" and report.format_p(0.0496, level=0.9) == "0.05"


@pytest.mark.parametrize("key", ["diff", "ci_low", "ci_high", "p_mcnemar"])
def test_a_comparison_with_any_number_nan_gets_no_verdict(key):
    line = report.format_comparisons([_comparison(**{key: float("nan")})]).splitlines()[2]
    assert line == "| s | kd | baseline | - | - | - | not measured (the file holds nan): no verdict |"


def test_the_verdict_beside_a_comparison_is_read_at_the_level_it_records():
    """At 99 %, p = 0.03 is no verdict, whatever the 95 % rule would say (and the file recorded)."""
    row = _comparison(p_mcnemar=0.03, level=0.99, verdict="no detectable difference at this size")
    assert report.format_comparisons([row]).splitlines()[2].endswith("| 0.03 | no detectable difference at this size |")


def test_a_comparison_that_recorded_no_verdict_shows_todays_alone():
    line = report.format_comparisons([_comparison(p_mcnemar=0.001)]).splitlines()[2]
    assert line.endswith("| 0.001 | better |")


def test_a_comparison_without_per_seed_differences_shows_a_dash_beside_one_that_has_them():
    rows = [_comparison(diff_per_seed=[0.01, -0.002]), _comparison(recipe="kd+transfer")]
    models = [{"name": "s kd+transfer", "accuracy_per_seed": [0.8, 0.7, 0.9]},  # 3 seeds against 2: no pairing
              {"name": "s baseline", "accuracy_per_seed": [0.7, 0.6]}]
    lines = report.format_comparisons(rows, models).splitlines()
    assert lines[2].endswith("| +1.00, -0.20 |") and lines[3].endswith("| - |")


def test_per_seed_differences_from_an_older_file_are_each_recipe_minus_its_baseline():
    models = [{"name": "s kd", "accuracy_per_seed": [0.8, 0.7]},
              {"name": "s baseline", "accuracy_per_seed": [0.7, 0.75]}]
    assert report.format_comparisons([_comparison()], models).splitlines()[2].endswith("| +10.00, -5.00 |")
    lopsided = [models[0], {"name": "s baseline", "accuracy_per_seed": [0.7]}]  # seeds that do not pair: none shown
    assert "per seed" not in report.format_comparisons([_comparison()], lopsided)


# ----------------------------------------------------------------------------- report: the README's results block


def _results(**run_changes) -> dict:
    run = {"evaluated_on": "test", "split_sizes": {"test": 10}, "device": "cpu", "seeds": [0], "wall_seconds": 1.0,
           "phase_seconds": {"teacher": 1, "students": 2, "evaluation": 3}, "profile": "tiny"} | run_changes
    return {"run": run, "models": [_model_row(name="teacher", accuracy=0.8), _model_row()]}


def test_one_seeds_accuracy_has_no_spread_and_an_older_files_std_still_shows():
    assert report._mean_std({"accuracy": 0.85, "accuracy_per_seed": [0.85]}, "accuracy") == "85.00"
    assert report._mean_std({"accuracy": 0.85, "accuracy_std": 0.01}, "accuracy") == "85.00 ± 1.00"


def test_the_latency_column_gives_the_interquartile_range_lower_quartile_first():
    results = _results()
    results["models"][1] |= {"latency_q1_ms": 0.9, "latency_q3_ms": 1.4}
    row = next(line for line in report.results_markdown(results).splitlines() if line.startswith("| s kd |"))
    assert "| 1.00 (0.90-1.40) |" in row


def test_the_header_counts_the_student_runs_taken_from_the_cache_and_says_nothing_when_none_were():
    cached = _results(student_status={"s kd": "cached", "s baseline": "trained", "s pl": "trained"})
    assert "evaluation 3 s; 1 of 3 student runs taken from the artifact cache), " in report.results_markdown(cached)
    fresh = _results(student_status={"s kd": "trained"})
    assert "artifact cache" not in report.results_markdown(fresh)


def test_the_header_of_a_file_without_a_thread_count_names_none():
    text = report.results_markdown(_results(precision={"training": "bf16"}))
    assert "evaluation 3 s), precision bf16, commit `-`." in text


def test_a_load_of_exactly_the_busy_threshold_is_busy():
    from kd_tutorial.threads import BUSY_LOAD
    text = report.results_markdown(_results(load_at_start=BUSY_LOAD))
    assert f"The machine was busy as the run started (1-minute load average {BUSY_LOAD:.1f})" in text
    assert "busy" not in report.results_markdown(_results(load_at_start=True))  # a flag, not a load


def test_the_median_pass_is_named_only_when_every_row_has_passes():
    results = _results()
    results["models"][1]["reviews_per_s_passes"] = [[300.0] * 3]  # the teacher's row from an older run has none
    assert "| reviews/s | train tokens/s |" in report.results_markdown(results)


def test_a_row_without_a_train_speed_carries_no_cache_mark():
    results = _results()
    results["models"][1]["train_speed_from"] = "an earlier run (2026-01-01 10:00)"  # but no train tokens/s recorded
    text = report.results_markdown(results)
    row = next(line for line in text.splitlines() if line.startswith("| s kd |"))
    assert "†" not in text and row.endswith("| - |")


def test_a_teacher_right_on_no_review_gives_no_share():
    results = _results()
    results["models"][0]["accuracy"] = 0.0
    row = next(line for line in report.results_markdown(results).splitlines() if line.startswith("| s kd |"))
    assert row.startswith("| s kd | 72.00 | - | 90.0 |")


def test_several_data_notes_are_one_sentence_separated_by_semicolons():
    text = report.results_markdown(_results(data_notes=["test: 3 left out", "validation: 2 left out"]))
    assert "\n\nData: test: 3 left out; validation: 2 left out.\n\n" in text


def test_one_seeds_results_say_nothing_of_means_over_seeds():
    """The sentences on means over seeds, and on the per-seed column, are for several seeds alone."""
    results = _results() | {"comparisons": [_comparison(verdict="better", p_mcnemar=0.001)]}
    one = report.results_markdown(results)
    assert "means over the seeds" not in one and "per-seed column" not in one
    several = report.results_markdown(results | {"run": results["run"] | {"seeds": [0, 1]}})
    assert "means over the seeds ± the sample standard deviation" in several and "per-seed column" in several


def test_the_sentence_above_the_comparisons_names_the_kd_transfer_pairs_only_where_the_file_has_them():
    clause = "and the recipes that add to `kd+transfer` against it"
    results = _results() | {"comparisons": [_comparison(p_mcnemar=0.001)]}
    assert "Each recipe against its student's baseline" in report.results_markdown(results)
    assert clause not in report.results_markdown(results)
    results["comparisons"].append(_comparison(recipe="kd+transfer+values", against="kd+transfer", p_mcnemar=0.001))
    assert clause in report.results_markdown(results)


def test_a_margin_shows_an_interval_only_when_it_was_tested_against_the_runner_up_named():
    lead = {"against": "C", "ci_low": 0.01, "ci_high": 0.09, "p_mcnemar": 0.001, "verdict": "better"}
    best = {"recipe": "A", "val_accuracy": 0.9, "validation": {"A": 0.9, "B": 0.85, "C": 0.8}, "validation_lead": lead}
    assert report._margin_text({"run": {"split_sizes": {}}}, "s", best) == ", 5.00 points above `B`"


def test_the_validation_size_in_the_margin_has_a_thousands_separator():
    best = {"recipe": "A", "val_accuracy": 0.9, "validation": {"A": 0.9, "B": 0.85}}
    assert report._margin_text({"run": {"split_sizes": {"validation": 12500}}}, "s", best) == \
        ", 5.00 points above `B` on 12,500 reviews"


def test_flops_are_named_in_the_largest_unit_they_reach():
    assert [report._flop_text(x) for x in (1e15, 1e12, 2.345e12, 1e9, 1e6, 999.0)] == \
        ["1 PFLOP", "1 TFLOP", "2.35 TFLOP", "1 GFLOP", "1 MFLOP", "999 FLOP"]


def test_the_three_phase_seconds_are_each_their_own():
    text = report.results_markdown(_results())
    assert "(teacher 1 s, teacher logits 0 s, students 2 s, evaluation 3 s)" in text


def test_agreement_and_accuracy_refuse_logits_and_labels_of_different_reviews_in_one_line():
    """agreement broadcast one row of logits against every row of the other model's and gave a fraction (3 rows
    against 4 failed inside torch); accuracy and the ECE failed on a mask's shape, or broadcast one label."""
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="agreement needs both models' logits on the same reviews, got 1 vs 4 rows"):
        evaluate.agreement(teacher[:1], teacher)  # gave 0.5
    with pytest.raises(ValueError, match="got 3 vs 4 rows: predict both on the same split"):
        evaluate.agreement(teacher[:3], teacher)
    for score in (evaluate.accuracy, evaluate.expected_calibration_error, evaluate.reliability_curve):
        with pytest.raises(ValueError, match="one label per row of logits, got 4 rows and 3 labels: pass the labels"):
            score(teacher, labels[:3])
        with pytest.raises(ValueError, match="got 1 rows and 4 labels"):
            score(teacher[:1], labels)  # broadcast: accuracy 0.5
    with pytest.raises(ValueError, match="correct_matrix needs one label per row"):
        evaluate.correct_matrix([teacher, teacher[:3]], labels)
    assert evaluate.accuracy(teacher, labels) == 1.0 and evaluate.agreement(teacher, 2 * teacher) == 1.0


def test_a_summary_keeps_each_historys_best_step_and_bare_plot_names():
    """The summary in docs/results keeps which validation pass a run kept (its best step), and is told apart from a
    whole results.json by its plots being bare file names, not paths into a run's --out folder."""
    history = {"steps": [{"loss": 1.0}], "evals": [{"step": 5, "val_acc": 0.8}], "best_step": 5, "seconds": 2.0}
    kept = report.summary(_results() | {"histories": {"s kd": history}, "plots": ["runs/latest/curves.png"]})
    assert kept["histories"]["s kd"]["best_step"] == 5 and kept["plots"] == ["curves.png"]
    assert report.is_summary(kept)
    assert not report.is_summary(kept | {"plots": ["runs/latest/curves.png"]})  # a whole results.json's paths


def test_the_readme_block_lists_the_results_files_in_path_order_whatever_order_they_come_in(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\nend\n", encoding="utf-8")
    paths = [tmp_path / "b-cpu.json", tmp_path / "a-tiny.json"]
    read = {str(paths[0]): _results(profile="cpu"), str(paths[1]): _results(profile="tiny")}
    report.splice_readme(readme, paths, read=read)
    text = readme.read_text(encoding="utf-8")
    assert text.index("Profile `tiny`") < text.index("Profile `cpu`")
    assert text.startswith(f"intro\n{report.README_START}\n") and text.endswith(f"{report.README_END}\nend\n")


def test_the_console_table_gives_each_model_its_share_of_the_teacher_only_beside_a_teacher():
    """distill's console table had no "% of teacher" column, which its footnote and the README's table explain."""
    share = {"share": 0.9, "ci_low": 0.871, "ci_high": 0.934}  # its interval, as the README's table gives it
    rows = [_model_row(name="teacher", accuracy=0.8), _model_row(accuracy=0.72), _model_row(name="s x", accuracy=None),
            _model_row(name="s y", accuracy=0.72, share_of_teacher=share)]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in report.format_table(rows).splitlines()]
    assert cells[0][:4] == ["model", "acc %", "% of teacher", "agree %"]
    assert [c[2] for c in cells[2:]] == ["100.0", "90.0", "-", "90.0 [87.1, 93.4]"]
    assert "% of teacher" not in report.format_table([_model_row()])  # rows without a teacher: no share to give


def test_a_run_of_one_thread_is_said_in_the_singular():
    """`kd-tutorial report` of a one-thread run said "1 threads"."""
    run = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "tiny.json").read_text())["run"]
    alone = run | {"student_workers": 1}
    assert report._precision_text(alone | {"torch_threads": 1}).endswith(", 1 thread")
    assert report._precision_text(alone | {"torch_threads": 2}).endswith(", 2 threads")
