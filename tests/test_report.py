"""How results are rendered: means over seeds with their spread, and what the data notes say."""
import json
from pathlib import Path

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
