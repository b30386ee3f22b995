"""Paired statistics: the sign test against exact binomial values; the t and noncentral t tests against SciPy's."""

import math
import statistics

import pytest

from resmooth.lab.stats import (against_observed, paired_difference, selection_gain, sign_test, summarize_values, t_cdf,
                            t_power, t_quantile)

scipy_stats = pytest.importorskip("scipy.stats")  # the independent reference (the test extra installs it)


def test_sign_test_is_the_exact_binomial():
    assert sign_test([0.3] * 5) == (5, 0, pytest.approx(2 / 32))
    assert sign_test([1, 2, 3, -1, -2]) == (3, 2, 1.0)
    # Ties are dropped: 4 wins, 1 loss out of 5 -> 2 * (1 + 5) / 32.
    assert sign_test([1, 1, 1, 1, -1, 0, 0]) == (4, 1, pytest.approx(12 / 32))
    wins, losses, p = sign_test([1] * 9 + [-1])
    assert p == pytest.approx(2 * (1 + 10) / 1024)
    assert sign_test([0, 0]) == (0, 0, 1.0)


def test_paired_difference_pairs_in_order():
    paired = paired_difference([91.0, 92.0, 90.5], [90.0, 92.5, 90.0])
    assert paired.mean == pytest.approx((1.0 - 0.5 + 0.5) / 3)
    assert (paired.wins, paired.losses) == (2, 1)
    with pytest.raises(ValueError, match="same, non-zero number"):
        paired_difference([1.0], [1.0, 2.0])


def test_a_paired_difference_prints_its_interval_and_one_pair_none():
    assert str(paired_difference([91.0, 92.0, 90.5], [90.0, 92.5, 90.0])) == "+0.33 [-1.56, +2.23]"
    # One pair has no spread: the difference alone, never "[nan, nan]".
    assert str(paired_difference([71.32], [67.03])) == "+4.29 (one pair)"


def test_t_interval_uses_the_t_quantile():
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    s = summarize_values([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s.ci95 == pytest.approx(2.7764 * statistics.stdev([1, 2, 3, 4, 5]) / math.sqrt(5), abs=1e-4)


@pytest.mark.parametrize("df", [1, 2, 4, 9])
def test_t_cdf_and_the_noncentral_power_are_scipys(df):
    for x in (-12.0, -2.5, -0.3, 0.0, 1.7, 6.0):
        assert t_cdf(x, df) == pytest.approx(scipy_stats.t.cdf(x, df), abs=1e-8)
    critical = scipy_stats.t.ppf(0.95, df)
    for effect in (0.0, 0.05, 0.3, 1.0):
        assert t_power(effect, 0.1, df) == pytest.approx(scipy_stats.nct.sf(critical, df, effect / 0.1), abs=1e-7)


def test_the_paired_t_interval_and_its_tests_are_scipys():
    method, baseline = [89.1, 89.6, 89.0, 89.4, 88.9], [89.3, 89.5, 89.2, 89.6, 89.0]
    paired = paired_difference(method, baseline)
    d = [m - b for m, b in zip(method, baseline)]
    low, high = scipy_stats.t.interval(0.95, 4, loc=statistics.fmean(d), scale=scipy_stats.sem(d))
    assert (paired.low, paired.high) == (pytest.approx(low, abs=1e-6), pytest.approx(high, abs=1e-6))
    assert paired.p == pytest.approx(scipy_stats.ttest_rel(method, baseline).pvalue, abs=1e-7)
    # "No gain of +0.33": H0 difference >= 0.33, against smaller.
    claimed = scipy_stats.ttest_1samp([x - 0.33 for x in d], 0.0, alternative="less").pvalue
    assert paired.p_below(0.33) == pytest.approx(claimed, abs=1e-7)
    assert paired.p_below(0.33) < 0.05 < paired.p  # the claim is rejected, though "no difference" is not
    gain = scipy_stats.ttest_1samp([x + 0.1 for x in d], 0.0, alternative="greater").pvalue
    assert paired.p_above(-0.1) == pytest.approx(gain, abs=1e-7)
    # A tie within 0.25: both one-sided tests (TOST) reject.
    upper = scipy_stats.ttest_1samp([x - 0.25 for x in d], 0.0, alternative="less").pvalue
    lower = scipy_stats.ttest_1samp([x + 0.25 for x in d], 0.0, alternative="greater").pvalue
    assert paired.p_equivalent(0.25) == pytest.approx(max(upper, lower), abs=1e-7)
    # The smallest gain detected with 80% power is where the noncentral t gives that power.
    gain = paired.detectable()
    assert scipy_stats.nct.sf(scipy_stats.t.ppf(0.95, 4), 4, gain / paired.se) == pytest.approx(0.8, abs=1e-6)
    # Ten seeds at the same spread detect a smaller gain.
    assert paired_difference(method * 2, baseline * 2).detectable() < gain


def test_the_selection_gain_is_the_expected_maximum_of_the_grid():
    # With the baseline known exactly the gain's mean would be E[max of 5 standard normals] = 1.16296
    # times the SD of a five-trial mean; the baseline's own noise has mean zero.
    mean, p95 = selection_gain(0.2, trials=5, grid=5, draws=100_000)
    assert mean == pytest.approx(1.16296 * 0.2 / math.sqrt(5), rel=0.02)
    assert mean < p95 < 4 * 0.2 / math.sqrt(5)
    assert selection_gain(0.2, grid=1)[0] == pytest.approx(0.0, abs=0.002)  # one setting: no selection
    assert selection_gain(0.0) == (0.0, 0.0)


def test_against_observed_carries_both_errors_by_hand():
    # d = (0.1, 0.3, 0.2, 0.4, 0.0): mean 0.2, variance 0.025, so se_ours^2 = 0.005 on 4 df. The
    # other study's two five-trial means, each with sd 0.5: 0.25 / 5 = 0.05 each on 4 df.
    ours = paired_difference([0.1, 0.3, 0.2, 0.4, 0.0], [0.0] * 5)
    test = against_observed(ours, 0.33, [0.5, 0.5], trials=5)
    assert test.se == pytest.approx(math.sqrt(0.105))
    assert test.z == pytest.approx(-0.13 / math.sqrt(0.105))  # -0.40119
    # Welch-Satterthwaite: 0.105^2 / (0.005^2 / 4 + 2 * 0.05^2 / 4) = 0.011025 / 0.00125625.
    assert test.df == pytest.approx(0.011025 / 0.00125625)  # 8.776
    assert test.p == pytest.approx(2 * scipy_stats.t.cdf(-0.13 / math.sqrt(0.105), 0.011025 / 0.00125625), abs=1e-8)
    assert test.p == pytest.approx(0.6978, abs=1e-4)


def test_against_observed_without_their_error_is_the_paired_t_test():
    ours = paired_difference([89.1, 89.6, 89.0, 89.4, 88.9], [89.3, 89.5, 89.2, 89.6, 89.0])
    test = against_observed(ours, 0.33, [0.0, 0.0], trials=5)
    assert test.df == pytest.approx(4)
    assert test.p == pytest.approx(2 * min(ours.p_below(0.33), 1 - ours.p_below(0.33)), abs=1e-9)
    # Their error widens the test: the same gap is less surprising.
    assert against_observed(ours, 0.33, [0.2, 0.2], trials=5).p > test.p
    with pytest.raises(ValueError, match="trials"):
        against_observed(ours, 0.33, [0.2, 0.2], trials=1)
    with pytest.raises(ValueError, match="sds"):
        against_observed(ours, 0.33, [-0.2], trials=5)
