"""How results are rendered: means over seeds with their spread, and what the data notes say."""
import json
from pathlib import Path

import pytest

from kd_tutorial.report import _mean_std, results_markdown


def test_a_mean_over_seeds_shows_its_spread_even_when_the_seeds_agree():
    assert _mean_std({"accuracy": 0.85, "accuracy_std": 0.0, "accuracy_per_seed": [0.85] * 3}, "accuracy") \
        == "85.00 ± 0.00"  # it read like one seed's number before
    assert _mean_std({"accuracy": 0.85}, "accuracy") == "85.00"  # one seed: no spread to show
    assert _mean_std({"accuracy": 0.85, "accuracy_std": 0.004, "accuracy_per_seed": [0.85, 0.854, 0.846]},
                     "accuracy") == "85.00 ± 0.40"


def test_the_rendered_results_say_where_the_splits_differ_from_what_was_asked():
    results = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "tiny.json").read_text())
    assert "Data:" not in results_markdown(results)  # recorded before data notes existed: none to show
    results["run"]["data_notes"] = ["test: 19 review(s) left out, their text being in the source's training reviews too"]
    assert "\n\nData: test: 19 review(s) left out, their text being in the source's training reviews too.\n\n" \
        in results_markdown(results)


def test_a_run_started_on_a_busy_machine_says_so_beside_its_times():
    """Times taken while other processes kept the cores busy read like idle-core times (a 32-fold spread of four
    identical students' reviews/s, with nothing said). The load before the run is recorded, and shown from 1 on."""
    results = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "tiny.json").read_text())
    said = "The machine was busy as the run started (1-minute load average 4.7), so its times are slower"
    assert "busy" not in results_markdown(results)  # recorded before the load was: nothing to say
    for load, shown in ((0.4, False), (4.7, True), (None, False), (True, False)):
        results["run"]["load_at_start"] = load
        assert (said in results_markdown(results)) is shown, load


def test_the_throughput_column_says_it_is_the_median_pass_where_it_is():
    results = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "tiny.json").read_text())
    assert "| reviews/s | train tokens/s |" in results_markdown(results)  # recorded before the passes were
    for row in results["models"]:
        row["reviews_per_s_passes"] = [[row["reviews_per_s"]] * 3]
    assert "| reviews/s (median of 3 passes) | train tokens/s |" in results_markdown(results)


def test_distill_records_the_load_before_it_started(monkeypatch):
    from kd_tutorial import pipeline, threads
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.5, 1.0, 0.5))
    assert pipeline._Phases().load == 2.5 and threads.load_average() == 2.5
    monkeypatch.delattr(threads.os, "getloadavg")  # Windows has none
    assert pipeline._Phases().load is None


def test_each_seeds_difference_is_shown_beside_the_interval_over_reviews():
    """The interval resamples reviews only: a 'better' whose seeds disagree (+0.63, +0.57, -0.04) read as a
    verdict on the recipe. Each seed's difference is now recorded and shown; older files give it from the
    models' accuracies per seed."""
    import torch
    from kd_tutorial.evaluate import compare_paired
    from kd_tutorial.report import format_comparisons
    a = torch.zeros(3, 100, dtype=torch.bool)
    a[0, :10], a[1, :5], a[2, :1] = True, True, True  # 10, 5 and 1 more right answers than b, seed by seed
    b = torch.zeros(3, 100, dtype=torch.bool)
    stats = compare_paired(a, b, n_boot=200)
    assert stats["diff_per_seed"] == pytest.approx([0.10, 0.05, 0.01])
    row = {"student": "s", "recipe": "kd", "against": "baseline"} | stats
    table = format_comparisons([row])
    assert table.splitlines()[0].endswith("| verdict | per seed (points) |")
    assert table.splitlines()[2].endswith("| +10.00, +5.00, +1.00 |")
    older = {k: v for k, v in row.items() if k != "diff_per_seed"}
    models = [{"name": "s kd", "accuracy_per_seed": [0.9, 0.8, 0.7]},
              {"name": "s baseline", "accuracy_per_seed": [0.85, 0.8, 0.75]}]
    assert format_comparisons([older], models).splitlines()[2].endswith("| +5.00, +0.00, -5.00 |")
    one_seed = row | {"diff_per_seed": [0.1]}
    assert "per seed" not in format_comparisons([one_seed])  # one seed: the difference is the seed's


def test_a_printed_p_value_or_bound_never_contradicts_the_verdict_beside_it():
    """p = 0.0496 printed to 2 digits read 0.05 beside "better", and a lower bound of +0.004 points +0.00."""
    from kd_tutorial.report import format_comparisons, format_interval, format_p
    assert [format_p(p) for p in (0.0496, 0.0504, 0.049999, 0.2, 1.0)] == ["0.0496", "0.05", "0.049999", "0.2", "1"]
    assert format_p(0.0099, level=0.99) == "0.0099" and format_p(0.011, level=0.99) == "0.011"
    assert format_interval({"ci_low": 0.00004, "ci_high": 0.0123}) == "[+0.004, +1.23]"
    assert format_interval({"ci_low": -0.0051, "ci_high": 1e-13}) == "[-0.51, +0.00]"  # float noise stays 0.00
    row = {"student": "s", "recipe": "kd", "against": "baseline", "diff": 0.004, "ci_low": 0.0004,
           "ci_high": 0.008, "p_mcnemar": 0.0496, "level": 0.95, "verdict": "better"}
    assert format_comparisons([row]).splitlines()[2] == \
        "| s | kd | baseline | +0.40 | [+0.04, +0.80] | 0.0496 | better |"


def test_a_verdict_recorded_by_an_earlier_rule_is_shown_beside_todays():
    """Three tuning files recorded "better" beside p = 0.0567: the table said what the p beside it denies."""
    from kd_tutorial.report import format_comparisons
    row = {"student": "s", "recipe": "kd", "against": "baseline", "diff": 0.004, "ci_low": 0.001,
           "ci_high": 0.008, "p_mcnemar": 0.0567, "level": 0.95, "verdict": "better"}
    assert format_comparisons([row]).splitlines()[2].endswith(
        "| 0.057 | no detectable difference at this size (recorded: better, by an earlier rule) |")


def test_the_best_recipes_margin_on_validation_is_named_in_files_from_before_it_was_recorded():
    """The cpu profile's three seeds chose compact-2L-H128's `+values` over `kd+transfer` by 0.07 points of mean
    validation accuracy, which the line did not show. A file from before best_recipes held every recipe's mean
    gives them from its runs' validation passes: the chosen one's equals the recorded choice."""
    from kd_tutorial.report import _validation_means
    record = "docs/results/earlier/cpu-3-seeds-0b90dc9.json"  # the README's block until e36
    results = json.loads((Path(__file__).resolve().parents[1] / record).read_text())
    for student, best in results["best_recipes"].items():
        means = _validation_means(results, student, best)
        assert "validation" not in best and means[best["recipe"]] == pytest.approx(best["val_accuracy"], abs=1e-9)
        assert max(means, key=means.get) == best["recipe"] and "baseline" not in means and "pseudo-label" not in means
    text = results_markdown(results)
    assert ("compact-2L-H128 `kd+transfer+values` (validation 86.67 %, 0.07 points above `kd+transfer` on 998 "
            "reviews, test 86.22 %") in text
    assert "A margin without an interval is a difference of mean validation accuracies over the seeds" in text
    level = results | {"best_recipes": {s: b | {"validation": {b["recipe"]: b["val_accuracy"], "kd": b["val_accuracy"]}}
                                        for s, b in results["best_recipes"].items()}}
    assert "(validation 86.67 %, level with `kd` on 998 reviews, and kept as the one trained first, test" in \
        results_markdown(level)
    one = results | {"best_recipes": {s: b | {"validation": {b["recipe"]: b["val_accuracy"]}}
                                      for s, b in results["best_recipes"].items()}}
    assert "points above" not in results_markdown(one) and "A margin" not in results_markdown(one)


def test_the_margin_names_the_runner_up_whose_lead_was_tested_when_two_tie_for_second():
    """best_recipes ranks ties by their rounded means, first trained first, and tests the lead over that runner-up;
    the line took the largest raw mean, so a runner-up 1e-8 higher by float noise was named, without the interval."""
    from kd_tutorial.report import _margin_text
    best = {"recipe": "A", "val_accuracy": 0.9, "validation": {"A": 0.9, "B": 0.85, "C": 0.85000001},
            "validation_lead": {"against": "B", "ci_low": 0.01, "ci_high": 0.09, "verdict": "better"}}
    assert _margin_text({"run": {"split_sizes": {"validation": 100}}}, "s", best) == \
        ", 5.00 points above `B` on 100 reviews [+1.00, +9.00], better"


def test_the_margin_gives_todays_verdict_and_the_interval_as_the_comparisons_table_does():
    """A review: the best-recipe line printed the verdict a file recorded, and rounded a bound of 0.004 points to
    +0.00; the comparisons table recomputes the verdict with today's rule (McNemar's p must agree) and keeps the
    digits that bound needs."""
    from kd_tutorial.report import _margin_text
    lead = {"against": "B", "ci_low": 0.00004, "ci_high": 0.003, "p_mcnemar": 0.2, "verdict": "better"}
    best = {"recipe": "A", "val_accuracy": 0.9, "validation": {"A": 0.9, "B": 0.898}, "validation_lead": lead}
    assert _margin_text({"run": {"split_sizes": {"validation": 1000}}}, "s", best) == (
        ", 0.20 points above `B` on 1,000 reviews [+0.004, +0.30], no detectable difference at this size "
        "(recorded: better, by an earlier rule)")


def test_the_table_puts_each_number_under_its_own_column_and_the_share_is_of_the_teachers_accuracy():
    """Accuracy and agreement (both in %), parameters in millions, and the "% of teacher" column as the student's
    accuracy over the teacher's with its interval in brackets, lower bound first; the best-recipe line gives the
    share itself, not a bound."""
    from kd_tutorial.report import format_table
    share = {"share": 0.9, "ci_low": 0.85, "ci_high": 0.95}
    models = [{"name": "teacher", "accuracy": 0.8, "agreement": 1.0, "ece": 0.1, "params": 4.0e6, "mb": 16.0,
               "latency_ms": 2.0, "reviews_per_s": 100.0},
              {"name": "s kd", "accuracy": 0.72, "agreement": 0.9, "ece": 0.05, "params": 1.5e6, "mb": 6.0,
               "latency_ms": 1.0, "reviews_per_s": 300.0, "share_of_teacher": share}]
    table = format_table(models).splitlines()
    assert [c.strip() for c in table[0].strip("|").split("|")] == ["model", "acc %", "% of teacher", "agree %", "ECE",
                                                                   "params M", "MB", "p50 ms", "reviews/s"]
    assert [c.strip() for c in table[2].strip("|").split("|")][:3] == ["teacher", "80.00", "100.0"]
    assert [c.strip() for c in table[3].strip("|").split("|")] == ["s kd", "72.00", "90.0 [85.0, 95.0]", "90.00",
                                                                   "0.050", "1.50", "6.0", "1.00", "300"]
    results = {"run": {"evaluated_on": "test", "split_sizes": {"test": 10}, "device": "cpu", "seeds": [0],
                       "wall_seconds": 1.0, "phase_seconds": {"teacher": 0, "students": 0, "evaluation": 0},
                       "profile": "tiny"},
               "models": models,
               "best_recipes": {"s": {"recipe": "kd", "val_accuracy": 0.75, "test_accuracy": 0.72,
                                      "share_of_teacher": share, "validation": {"kd": 0.75}}}}
    text = results_markdown(results)
    row = next(line for line in text.splitlines() if line.startswith("| s kd |"))
    assert row.startswith("| s kd | 72.00 | 90.0 [85.0, 95.0] | 90.0 | 0.050 | 1.50 | 1.00 | 300 |")
    assert "s `kd` (validation 75.00 %, test 72.00 %, 90.0 % of the teacher [85.0, 95.0])" in text


def test_the_margin_is_over_the_runner_up_not_the_last_recipe():
    """With three distillation recipes the margin is the chosen one's lead over the second best, the one its lead
    was tested against, never over the worst."""
    from kd_tutorial.report import _margin_text
    best = {"recipe": "A", "val_accuracy": 0.9, "validation": {"A": 0.9, "B": 0.8, "C": 0.85}}
    assert _margin_text({"run": {"split_sizes": {"validation": 100}}}, "s", best) == \
        ", 5.00 points above `C` on 100 reviews"
