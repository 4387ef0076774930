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
