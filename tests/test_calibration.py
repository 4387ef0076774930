"""Calibration: the expected calibration error and the reliability curve, over the labelled rows only."""
import math

import pytest
import torch

from kd_tutorial.evaluate import accuracy, expected_calibration_error, reliability_curve


def _logits(confidences: list[float], predictions: list[int]) -> torch.Tensor:
    """Two-class logits whose softmax gives each row ``confidence`` for class ``prediction``."""
    rows = [[c, 1 - c] if p == 0 else [1 - c, c] for c, p in zip(confidences, predictions)]
    return torch.tensor(rows, dtype=torch.float64).log()


def test_ece_weighs_each_bins_gap_between_accuracy_and_confidence_by_its_share_of_rows():
    # two rows at 0.95 (one right: accuracy 0.5) and two at 0.65 (both right): 0.5 * 0.45 + 0.5 * 0.35
    logits = _logits([0.95, 0.95, 0.65, 0.65], [0, 0, 1, 1])
    assert expected_calibration_error(logits, [0, 1, 1, 1]) == pytest.approx(0.40, abs=1e-6)


def test_ece_is_zero_where_each_bins_accuracy_equals_its_confidence():
    logits = _logits([0.75] * 4, [0, 0, 0, 0])  # three of four right at 75 % confidence
    assert expected_calibration_error(logits, [0, 0, 0, 1]) == pytest.approx(0.0, abs=1e-6)


def test_unlabelled_rows_are_left_out_of_the_ece_and_the_curve_as_of_the_accuracy():
    labelled = _logits([0.95, 0.95, 0.65, 0.65], [0, 0, 1, 1])
    extra = _logits([0.95, 0.55, 0.85], [1, 0, 1])  # rows labelled -1: no answer to be right or wrong about
    logits, labels = torch.cat([labelled, extra]), [0, 1, 1, 1, -1, -1, -1]
    assert accuracy(logits, labels) == accuracy(labelled, [0, 1, 1, 1]) == 0.75
    assert expected_calibration_error(logits, labels) == pytest.approx(0.40, abs=1e-6)
    curve = reliability_curve(logits, labels)
    assert sum(curve["count"]) == 4 and curve["count"][9] == 2 and curve["count"][6] == 2
    assert curve["accuracy"][9] == pytest.approx(0.5) and curve["confidence"][9] == pytest.approx(0.95)
    assert math.isnan(curve["accuracy"][5]) and curve["count"][5] == 0  # 0.55 was an unlabelled row's


def test_ece_of_no_labelled_row_is_nan_as_the_accuracy():
    logits = _logits([0.9, 0.6], [0, 1])
    assert math.isnan(expected_calibration_error(logits, [-1, -1])) and math.isnan(accuracy(logits, [-1, -1]))


def test_rows_of_full_confidence_count_in_the_top_bin():
    """Guards against bins that leave out a confidence of exactly 1 (a float32 softmax of logits 80 apart): an
    over-confident model's worst rows then weighed nothing, and its ECE read 0."""
    logits = torch.tensor([[40.0, -40.0]] * 4)
    assert float(logits.softmax(-1).max()) == 1.0
    assert expected_calibration_error(logits, [0, 0, 1, 1]) == pytest.approx(0.5)
    curve = reliability_curve(logits, [0, 0, 1, 1])
    assert curve["count"][9] == 4 and curve["accuracy"][9] == pytest.approx(0.5)


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True, "10"])
def test_a_number_of_bins_that_is_no_whole_number_from_one_is_refused_in_one_line(n_bins):
    """``n_bins=0`` gave an ECE of 0.0 ("perfectly calibrated") that was never computed, ``n_bins=-3`` an error inside
    torch.linspace."""
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), [0, 1, 1]
    for score in (expected_calibration_error, reliability_curve):
        with pytest.raises(ValueError, match=rf"^n_bins={n_bins!r}: give a whole number of confidence bins >= 1 "
                                             r"\(10 by default\)$"):
            score(logits, labels, n_bins=n_bins)
    assert expected_calibration_error(logits, labels, n_bins=1) >= 0
    assert len(reliability_curve(logits, labels, n_bins=1)["count"]) == 1
