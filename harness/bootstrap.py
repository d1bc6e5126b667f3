"""The statistic of the gate: the ratio of two medians (candidate over baseline) and its
bootstrap percentile confidence interval, computed exactly rather than by resampling.

Resampling n values with replacement and taking the median is a draw of one order statistic
of the sorted sample, and which one has a closed form: the rank J of a resample's median
(its lower median, rank k = ceil(n/2)) satisfies P(J <= j) = P(Binomial(n, j/n) >= k).
So each side's bootstrap distribution of the median is a few dozen sample values with exact
weights, the ratio's distribution is their weighted outer quotient, and its quantiles are the
interval. No random numbers: the same files always give the same interval, and a side with
2000 samples costs what one with 20 does (a resampling bootstrap would draw B x n values per
side, about a minute for a 200-case suite of 2000-sample rows).

For an odd n this is exactly the percentile bootstrap of the median; for an even n each
resample's median is its lower median (the two middle order statistics, averaged, differ by
one gap between neighbouring samples). tests/harness/test_bootstrap.py checks the interval
against a resampling bootstrap.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

_SPREAD = 6.0  # the rank window kept, in multiples of sqrt(n) (the rank's sd is sqrt(n)/2)
_NEGLIGIBLE = 1e-13  # weights below this are dropped


@dataclass(frozen=True)
class RatioCI:
    ratio: float  # median(candidate) / median(baseline)
    low: float
    high: float  # the percentile interval of the bootstrap distribution of the ratio


def ratio_of_medians(baseline, candidate, confidence: float = 0.95) -> RatioCI:
    """The ratio of the candidate's median to the baseline's, with its `confidence`
    bootstrap percentile interval. Both samples must be non-empty, finite and positive."""
    x = _clean(baseline, "baseline")
    y = _clean(candidate, "candidate")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie between 0 and 1, got {confidence}")
    vx, wx = median_distribution(x)
    vy, wy = median_distribution(y)
    ratios = np.outer(vy, 1.0 / vx).ravel()
    weights = np.outer(wy, wx).ravel()
    order = np.argsort(ratios, kind="stable")
    ratios, cumulative = ratios[order], np.cumsum(weights[order])
    cumulative /= cumulative[-1]
    tail = (1 - confidence) / 2
    low = ratios[min(np.searchsorted(cumulative, tail, side="left"), len(ratios) - 1)]
    high = ratios[min(np.searchsorted(cumulative, 1 - tail, side="left"), len(ratios) - 1)]
    return RatioCI(float(np.median(y) / np.median(x)), float(low), float(high))


def median_distribution(samples) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap distribution of a sample's (lower) median: values and their weights."""
    xs = np.sort(np.asarray(samples, dtype=np.float64))
    ranks, weights = _rank_distribution(len(xs))
    return xs[ranks], weights


@functools.lru_cache(maxsize=512)
def _rank_distribution(n: int) -> tuple[np.ndarray, np.ndarray]:
    """0-based ranks of the sorted sample and their probabilities of being a resample's
    lower median (depends on n only)."""
    if n == 1:
        return np.array([0]), np.array([1.0])
    k = (n + 1) // 2  # 1-based rank of the lower median
    half = _SPREAD * math.sqrt(n) + 3
    js = np.arange(max(1, math.floor(k - half)), min(n - 1, math.ceil(k + half)) + 1)  # 1-based ranks j < n
    top = min(n, math.ceil(k + 2 * half))
    i = np.arange(k, top + 1)  # the binomial's upper tail, from k on
    log_choose = np.array([math.lgamma(n + 1) - math.lgamma(v + 1) - math.lgamma(n - v + 1) for v in i])
    p = js / n
    log_pmf = log_choose[None, :] + i[None, :] * np.log(p)[:, None] + (n - i)[None, :] * np.log1p(-p)[:, None]
    cdf = np.minimum(np.exp(log_pmf).sum(axis=1), 1.0)  # P(J <= j) = P(Binomial(n, j/n) >= k)
    cdf = np.concatenate([[0.0], cdf, [1.0]])  # below the window: 0; rank n: 1
    ranks = np.concatenate([js, [n]]) - 1
    weights = np.clip(np.diff(cdf), 0.0, None)
    keep = weights > _NEGLIGIBLE
    weights = weights[keep]
    return ranks[keep], weights / weights.sum()


def _clean(samples, side: str) -> np.ndarray:
    xs = np.asarray(list(samples) if not isinstance(samples, np.ndarray) else samples, dtype=np.float64).ravel()
    if xs.size == 0:
        raise ValueError(f"the {side} has no samples")
    if not np.all(np.isfinite(xs)) or np.any(xs <= 0):
        raise ValueError(f"the {side}'s samples must be finite and positive")
    return xs
