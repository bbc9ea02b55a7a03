"""Bootstrap intervals over items: of each score, and of the difference between two models (paired).

Paired means both models are scored on the same resampled items, so the interval reflects how much the
difference depends on which items happened to be drawn, not the (larger) spread of each score alone.
Resampling works on the per-item metric rows, so corpus-level metrics (BLEU, macro-F1, AUC) are recomputed
on every resample rather than approximated by item averages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuneforge.eval.metrics import MetricRows, item_mean


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float
    replicates: np.ndarray  # the statistic on each resample (for combining tasks into an overall figure)


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _replicates(rows: MetricRows, idx: np.ndarray) -> np.ndarray:
    if rows.reduce is item_mean:  # the common case, vectorised
        return np.asarray(rows.rows[:, 0][idx].mean(axis=1), dtype=float)
    return np.asarray([rows.reduce(rows.rows[i]) for i in idx], dtype=float)


def _interval(value: float, reps: np.ndarray) -> Interval:
    finite = reps[np.isfinite(reps)]
    if not len(finite):
        return Interval(value, float("nan"), float("nan"), reps)
    low, high = np.percentile(finite, [2.5, 97.5])
    return Interval(value, float(low), float(high), reps)


def bootstrap(rows: MetricRows, idx: np.ndarray) -> Interval:
    """95% percentile interval of one model's score."""
    return _interval(rows.value(), _replicates(rows, idx))


def paired_bootstrap(reference: MetricRows, other: MetricRows, idx: np.ndarray) -> Interval:
    """95% interval of other - reference, both scored on the same resampled items."""
    if len(reference.rows) != len(other.rows):
        raise ValueError("a paired bootstrap needs both models scored on the same items")
    reps = _replicates(other, idx) - _replicates(reference, idx)
    return _interval(other.value() - reference.value(), reps)


def mean_interval(parts: list[Interval]) -> Interval:
    """The mean of several tasks' statistics, its interval from the mean of their replicates."""
    value = float(np.mean([p.value for p in parts]))
    reps = np.mean(np.stack([p.replicates for p in parts]), axis=0)
    return _interval(value, reps)


__all__ = ["Interval", "bootstrap", "mean_interval", "paired_bootstrap", "resample_indices"]
