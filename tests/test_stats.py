"""Paired statistics: the sign test against exact binomial values, the bootstrap against its definition."""

import math
import statistics

import pytest

from resmooth.stats import bootstrap_interval, paired_difference, sign_test, summarize_values, t_quantile


def test_sign_test_is_the_exact_binomial():
    assert sign_test([0.3] * 5) == (5, 0, pytest.approx(2 / 32))
    assert sign_test([1, 2, 3, -1, -2]) == (3, 2, 1.0)
    # Ties are dropped: 4 wins, 1 loss out of 5 -> 2 * (1 + 5) / 32.
    assert sign_test([1, 1, 1, 1, -1, 0, 0]) == (4, 1, pytest.approx(12 / 32))
    wins, losses, p = sign_test([1] * 9 + [-1])
    assert p == pytest.approx(2 * (1 + 10) / 1024)
    assert sign_test([0, 0]) == (0, 0, 1.0)


def test_bootstrap_interval_brackets_the_mean_and_collapses_for_constant_values():
    values = [0.1, -0.4, 0.9, 0.3, 0.2]
    low, high = bootstrap_interval(values, seed=1)
    assert min(values) <= low < statistics.fmean(values) < high <= max(values)
    assert bootstrap_interval([0.5] * 5) == (0.5, 0.5)
    # Seeded: the same interval every time.
    assert bootstrap_interval(values, seed=1) == (low, high)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(values, level=1.5)


def test_paired_difference_pairs_in_order():
    paired = paired_difference([91.0, 92.0, 90.5], [90.0, 92.5, 90.0])
    assert paired.mean == pytest.approx((1.0 - 0.5 + 0.5) / 3)
    assert (paired.wins, paired.losses) == (2, 1)
    with pytest.raises(ValueError, match="same, non-zero number"):
        paired_difference([1.0], [1.0, 2.0])


def test_t_interval_uses_the_t_quantile():
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    s = summarize_values([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s.ci95 == pytest.approx(2.7764 * statistics.stdev([1, 2, 3, 4, 5]) / math.sqrt(5), abs=1e-4)
