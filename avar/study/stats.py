"""The statistics behind the study's findings: correlations with bootstrap intervals,
intervals over seeds, and paired differences on the same questions.

Intervals are 95% ones unless a `level` says otherwise. Every interval over seeds is a
Student's t one, as few seeds need: a percentile bootstrap over 3 seeds is about half as
wide as it should be. Grades come as [seeds, questions] arrays of 0/1 (`seed_interval`):
their interval carries both the noise of training (the spread of the seed means) and of
the question sample (the spread of the question means), with Welch-Satterthwaite degrees
of freedom, so a spread between 3 seeds is read with t's heavy tails."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats


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


def t_quantile(df: float, level: float = 0.95) -> float:
    """Student's t quantile for a two-sided `level` interval with `df` degrees of freedom."""
    return float(stats.t.ppf(1 - (1 - level) / 2, df))


def t_interval(values, level: float = 0.95) -> Estimate:
    """Mean over seeds with Student's t interval (none from one seed)."""
    values = np.asarray(values, float)
    mean = float(values.mean())
    if len(values) < 2:
        return Estimate(mean, None, None, len(values))
    half = t_quantile(len(values) - 1, level) * float(values.std(ddof=1)) / np.sqrt(len(values))
    return Estimate(mean, float(mean - half), float(mean + half), len(values))


def seed_interval(values, level: float = 0.95) -> Estimate:
    """Mean of a [seeds, questions] array with a t interval over both levels.

    Squared standard error: the variance of the seed means over the seeds plus that of
    the question means over the questions (the seed-by-question noise is in both, which
    errs wide); degrees of freedom by Welch-Satterthwaite, from seeds - 1 when the seeds
    dominate to questions - 1 when the questions do. One seed: the questions' t interval."""
    values = np.atleast_2d(np.asarray(values, float))
    seeds, questions = values.shape
    mean = float(values.mean())
    if questions < 2:
        return Estimate(mean, None, None, values.size)
    parts = [(values.mean(axis=0).var(ddof=1) / questions, questions - 1)]
    if seeds > 1:
        parts.append((values.mean(axis=1).var(ddof=1) / seeds, seeds - 1))
    variance = sum(v for v, _ in parts)
    if variance == 0:
        return Estimate(mean, mean, mean, values.size)
    df = variance**2 / sum(v**2 / d for v, d in parts)
    half = t_quantile(df, level) * float(np.sqrt(variance))
    return Estimate(mean, mean - half, mean + half, values.size)


def paired_difference(a, b, level: float = 0.95) -> Estimate:
    """Mean of a - b over the same (seed, question) pairs ([seeds, questions] each), with
    the seed-level t interval of the paired differences (`level`: its coverage)."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape != b.shape:
        raise ValueError(f"paired grades differ in shape: {a.shape} and {b.shape}")
    return seed_interval(a - b, level)
