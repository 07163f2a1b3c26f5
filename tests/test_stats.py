"""Accuracy intervals: the Wilson score interval against hand-computed values."""

from __future__ import annotations

import pytest

from avar.stats import accuracy_metrics, accuracy_summary, interval_cell, wilson


def test_wilson_on_known_counts():
    # 5/10: p = 0.5, z^2 = 3.8415, 1 + z^2/n = 1.38415; centre (0.5 + 0.19207) / 1.38415 = 0.5,
    # half 1.96 * sqrt(0.025 + 0.0096037) / 1.38415 = 0.26341
    assert wilson(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    # 0/10: centre = half = 0.19207 / 1.38415 = 0.13877, so [0, 0.27753], never below 0
    assert wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)  # mirror of 0/10
    # 13/64 = 0.203 (the old README's held-out set): 1 + z^2/n = 1.060024, centre
    # (0.203125 + 0.030012) / 1.060024 = 0.219936, half 1.96 * sqrt(0.0025291 + 0.00023447)
    # / 1.060024 = 0.097203: about +-0.1, wider than most differences it was asked to show
    assert wilson(13, 64) == pytest.approx((0.12273, 0.31714), abs=1e-5)


def test_wilson_narrows_with_n():
    widths = [wilson(n // 2, n)[1] - wilson(n // 2, n)[0] for n in (10, 100, 1000)]
    assert widths[0] > widths[1] > widths[2]
    # at n = 1000 the half-width is close to the normal one, 1.96 * sqrt(0.25 / 1000) = 0.031
    assert widths[2] / 2 == pytest.approx(0.031, abs=5e-4)


@pytest.mark.parametrize("correct, n", [(1, 0), (-1, 5), (6, 5)])
def test_wilson_rejects_impossible_counts(correct, n):
    with pytest.raises(ValueError):
        wilson(correct, n)


def test_accuracy_metrics_overall_and_per_category():
    correct = [True, False, True, True, False, False]
    categories = ["color", "color", "shape", "shape", "shape", "count"]
    metrics = accuracy_metrics("eval/synthetic", correct, categories)
    assert metrics["eval/synthetic/accuracy"] == 0.5 and metrics["eval/synthetic/n"] == 6
    low, high = wilson(3, 6)
    assert metrics["eval/synthetic/accuracy_low"] == low
    assert metrics["eval/synthetic/accuracy_high"] == high
    assert metrics["eval/synthetic/accuracy/shape"] == pytest.approx(2 / 3)
    assert metrics["eval/synthetic/n/shape"] == 3
    assert metrics["eval/synthetic/accuracy_high/count"] == wilson(0, 1)[1]
    assert len(metrics) == 4 * 4  # overall + 3 categories, 4 numbers each
    assert accuracy_summary([True, False]) == {
        "accuracy": 0.5,
        "n": 2,
        "correct": 1,
        "low": wilson(1, 2)[0],
        "high": wilson(1, 2)[1],
    }


def test_interval_cell():
    assert interval_cell(0.203, 0.1228, 0.3158) == "0.203 [0.123, 0.316]"
    assert interval_cell(None, None, None) == "-"
    assert interval_cell(0.5, None, None) == "0.500"
