"""The statistics behind the study's findings: correlations with bootstrap intervals,
intervals over seeds, and paired differences on the same questions.

Intervals are 95% ones unless a `level` says otherwise. Grades come as [seeds, questions]
arrays of 0/1: the hierarchical bootstrap resamples seeds, then questions, so an interval
carries both the noise of training (seeds) and of the question sample (questions)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Student's t 97.5% quantiles for 1..14 degrees of freedom (seeds - 1); from 15 on, the
# Cornish-Fisher expansion around the normal's (within 0.001 of the exact value).
T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
)
Z975 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A number with its 95% interval (low and high are None when it cannot be had)."""

    value: float
    low: float | None
    high: float | None
    n: int
    """What the interval is over: points, seeds or (seed, question) pairs."""

    def above(self, bar: float = 0.0) -> bool:
        return self.low is not None and self.low > bar

    def below(self, bar: float = 0.0) -> bool:
        return self.high is not None and self.high < bar

    def cell(self, digits: int = 3) -> str:
        if self.low is None or self.high is None:
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def jsonable(value):
    """`value` with every Estimate in it (nested in dicts and lists) as a plain dict."""
    if isinstance(value, Estimate):
        return value.as_dict()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def pearson(x, y) -> float:
    """Pearson's r; nan when either side is constant (or there are fewer than 2 points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if denominator > 0 else float("nan")


def ranks(values) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    values = np.asarray(values, float)
    order = np.argsort(values, kind="mergesort")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranked[tied] = ranked[tied].mean()
    return ranked


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's r of the ranks."""
    return pearson(ranks(x), ranks(y))


def bootstrap_correlation(
    x, y, statistic: Callable = pearson, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """The statistic on the points, with a percentile interval over points resampled with
    replacement (resamples where a side is constant are dropped). Fewer than 3 points:
    no interval."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} points and y {len(y)}")
    value = statistic(x, y)
    if len(x) < 3:
        return Estimate(value, None, None, len(x))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(x), size=(resamples, len(x)))
    values = np.array([statistic(x[p], y[p]) for p in picks])
    values = values[np.isfinite(values)]
    if len(values) < resamples // 2:
        return Estimate(value, None, None, len(x))
    low, high = np.percentile(values, [2.5, 97.5])
    return Estimate(value, float(low), float(high), len(x))


def t975(df: int) -> float:
    """Student's t 97.5% quantile with `df` degrees of freedom."""
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values) -> Estimate:
    """Mean over seeds with Student's t interval (none from one seed)."""
    values = np.asarray(values, float)
    mean = float(values.mean())
    if len(values) < 2:
        return Estimate(mean, None, None, len(values))
    t = t975(len(values) - 1)
    half = t * float(values.std(ddof=1)) / np.sqrt(len(values))
    return Estimate(mean, float(mean - half), float(mean + half), len(values))


def hierarchical_mean(
    grades, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> Estimate:
    """Mean of a [seeds, questions] array, with an interval resampling seeds (when there
    are several), then questions."""
    return _hierarchical(np.asarray(grades, float), resamples, seed, level)


def paired_difference(a, b, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean of a - b over the same (seed, question) pairs ([seeds, questions] each), with
    the hierarchical interval of the paired differences (`level`: its coverage)."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape != b.shape:
        raise ValueError(f"paired grades differ in shape: {a.shape} and {b.shape}")
    return _hierarchical(a - b, resamples, seed, level)


def _hierarchical(values: np.ndarray, resamples: int, seed: int, level: float) -> Estimate:
    values = np.atleast_2d(values)
    seeds, questions = values.shape
    mean = float(values.mean())
    if questions < 2:
        return Estimate(mean, None, None, values.size)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for i in range(resamples):
        rows = rng.integers(0, seeds, size=seeds) if seeds > 1 else np.zeros(1, int)
        columns = rng.integers(0, questions, size=questions)
        means[i] = values[np.ix_(rows, columns)].mean()
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(mean, float(low), float(high), values.size)
