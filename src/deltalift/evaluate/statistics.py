"""Rank correlation and bootstrap confidence intervals used by the metrics and the experiments."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deltalift.random_state import RandomState, numpy_generator

__all__ = ["BootstrapInterval", "bootstrap_mean", "rank", "spearman"]


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks ``1..n`` of a 1-d array, ties given the mean of their ranks (``scipy.stats.rankdata``'s "average")."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"rank takes a 1-d array, got shape {values.shape}")
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(values)]])
    ranks = np.empty(len(values))
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two arrays (flattened): Pearson's correlation of their
    ranks, ties averaged.  ``nan`` when either is constant."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman needs arrays of one size, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError("spearman needs at least two values")
    ra, rb = rank(a) - (a.size + 1) / 2.0, rank(b) - (a.size + 1) / 2.0
    denominator = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    return float(np.sum(ra * rb) / denominator) if denominator > 0 else float("nan")


@dataclass(frozen=True)
class BootstrapInterval:
    """A mean and its percentile bootstrap interval at ``level``."""

    mean: float
    low: float
    high: float
    level: float


def bootstrap_mean(
    values: np.ndarray, n_resamples: int = 2000, level: float = 0.95, random_state: RandomState = 0
) -> BootstrapInterval:
    """The mean of ``values`` and its percentile bootstrap confidence interval (Efron & Tibshirani
    1993, ch. 13): the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the means of
    ``n_resamples`` resamples drawn with replacement; seeded."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    generator = numpy_generator(random_state)
    means = values[generator.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return BootstrapInterval(float(values.mean()), float(low), float(high), level)
