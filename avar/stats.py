"""Accuracies with their sample size and a 95% Wilson score interval.

Every accuracy avar reports (checkpoint scoring, `avar eval`, the results table, MLflow)
comes with n and the interval, so that a difference inside the noise reads as one. Wilson
rather than the normal approximation: it stays inside [0, 1] and is honest at 0/n and n/n,
which small held-out sets hit.
"""

from __future__ import annotations

import math
from collections import defaultdict

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high): the Wilson score interval of `correct` successes in `n` trials."""
    if n <= 0:
        raise ValueError(f"an interval needs n >= 1, got {n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, {n}], got {correct}")
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_summary(correct: list[bool]) -> dict:
    """{"accuracy", "n", "correct", "low", "high"} of graded answers (n >= 1)."""
    n, right = len(correct), sum(map(bool, correct))
    low, high = wilson(right, n)
    return {"accuracy": right / n, "n": n, "correct": right, "low": low, "high": high}


def accuracy_metrics(prefix: str, correct: list[bool], categories: list[str]) -> dict[str, float]:
    """Flat metrics for MLflow and the metrics files, overall and per category:
    `{prefix}/accuracy[/<category>]` with `{prefix}/n`, `{prefix}/accuracy_low` and
    `{prefix}/accuracy_high` beside it (same suffix)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for ok, category in zip(correct, categories, strict=True):
        groups[f"/{category}"].append(ok)
    metrics: dict[str, float] = {}
    for suffix, answers in [("", list(correct)), *sorted(groups.items())]:
        summary = accuracy_summary(answers)
        metrics[f"{prefix}/accuracy{suffix}"] = summary["accuracy"]
        metrics[f"{prefix}/n{suffix}"] = summary["n"]
        metrics[f"{prefix}/accuracy_low{suffix}"] = summary["low"]
        metrics[f"{prefix}/accuracy_high{suffix}"] = summary["high"]
    return metrics


def interval_cell(accuracy: float | None, low: float | None, high: float | None) -> str:
    """0.203 [0.123, 0.316]: an accuracy with its interval, as tables show it."""
    if accuracy is None:
        return "-"
    if low is None or high is None:
        return f"{accuracy:.3f}"
    return f"{accuracy:.3f} [{low:.3f}, {high:.3f}]"
