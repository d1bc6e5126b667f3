"""The exact bootstrap of the ratio of medians: its distribution is the resampling
bootstrap's, computed without random numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.bootstrap import _rank_distribution, median_distribution, ratio_of_medians


def test_the_rank_distribution_of_small_samples_is_the_binomial_formula():
    ranks, weights = _rank_distribution(3)  # P(J <= j) = P(Bin(3, j/3) >= 2)
    assert list(ranks) == [0, 1, 2]
    assert weights == pytest.approx([7 / 27, 13 / 27, 7 / 27])
    assert list(_rank_distribution(1)[0]) == [0]
    for n in (2, 10, 11, 500, 2000):
        ranks, weights = _rank_distribution(n)
        assert weights.sum() == pytest.approx(1.0) and (weights > 0).all()
        assert len(ranks) <= 10 * math.sqrt(n) + 10, "only ranks near the middle carry weight"


@pytest.mark.parametrize("n", [7, 10, 60])
def test_the_median_distribution_matches_resampling(n):
    rng = np.random.default_rng(n)
    xs = rng.lognormal(0, 0.3, n)
    values, weights = median_distribution(xs)
    boot = np.sort(xs)[np.sort(rng.integers(0, n, (40000, n)), axis=1)[:, (n - 1) // 2]]  # lower medians
    for q in (0.025, 0.25, 0.5, 0.75, 0.975):
        exact = values[np.searchsorted(np.cumsum(weights), q)]
        assert exact == pytest.approx(np.quantile(boot, q, method="inverted_cdf"), rel=0.02)


@pytest.mark.parametrize("n1, n2", [(9, 11), (200, 180)])
def test_the_ratio_interval_matches_a_resampling_bootstrap(n1, n2):
    rng = np.random.default_rng(n1)
    x, y = rng.lognormal(0, 0.2, n1), rng.lognormal(0.05, 0.2, n2)
    ci = ratio_of_medians(x, y)
    boot = (np.median(y[rng.integers(0, n2, (20000, n2))], axis=1) /
            np.median(x[rng.integers(0, n1, (20000, n1))], axis=1))
    low, high = np.quantile(boot, [0.025, 0.975])
    width = high - low
    assert abs(ci.low - low) < 0.08 * width and abs(ci.high - high) < 0.08 * width
    assert ci.ratio == pytest.approx(np.median(y) / np.median(x))
    assert ci.low <= ci.ratio <= ci.high


def test_deterministic_and_symmetric():
    rng = np.random.default_rng(3)
    x, y = rng.lognormal(0, 0.1, 300), rng.lognormal(0, 0.1, 310)
    assert ratio_of_medians(x, y) == ratio_of_medians(list(x), list(y))
    forward, backward = ratio_of_medians(x, y), ratio_of_medians(y, x)
    assert forward.low == pytest.approx(1 / backward.high) and forward.high == pytest.approx(1 / backward.low)


def test_a_wider_confidence_gives_a_wider_interval():
    rng = np.random.default_rng(4)
    x, y = rng.lognormal(0, 0.1, 100), rng.lognormal(0, 0.1, 100)
    narrow, wide = ratio_of_medians(x, y, 0.8), ratio_of_medians(x, y, 0.99)
    assert wide.low <= narrow.low <= narrow.high <= wide.high


@pytest.mark.parametrize("bad, message", [([], "has no samples"), ([1.0, -1.0], "finite and positive"),
                                          ([1.0, float("nan")], "finite and positive")])
def test_bad_samples_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        ratio_of_medians([1.0, 2.0], bad)
