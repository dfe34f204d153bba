"""Hand-computed checks of the point estimators, the bootstrap and the Student t intervals."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from grpo_lab.analysis import estimators as est


def test_mean_and_median_by_hand():
    assert est.mean([1, 2, 3, 10]) == pytest.approx(4.0)
    assert est.median([1, 2, 3, 10]) == pytest.approx(2.5)
    assert est.median([5, 1, 3]) == pytest.approx(3.0)


def test_iqm_of_one_to_eight_is_mean_of_middle_four():
    # sorted 1..8, drop 2 at each end: (3 + 4 + 5 + 6) / 4
    assert est.iqm(np.arange(1, 9)) == pytest.approx(4.5)
    assert est.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)


def test_iqm_fractional_weights_when_n_not_multiple_of_four():
    # n = 6: order statistics 1 and 4 straddle the quartiles with weight 1/6, 2 and 3 get 1/3
    assert est.iqm([10, 0, 2, 1, 10, 0]) == pytest.approx(0 / 6 + 1 / 3 + 2 / 3 + 10 / 6)
    # n = 5: weights 0, 0.3, 0.4, 0.3, 0 -> 0.3*2 + 0.4*3 + 0.3*40
    assert est.iqm([1, 2, 3, 40, 100]) == pytest.approx(0.3 * 2 + 0.4 * 3 + 0.3 * 40)
    assert est._iqm_weights(5) == pytest.approx([0, 0.3, 0.4, 0.3, 0])


def test_iqm_matches_trim_mean_when_n_divisible_by_four():
    values = np.random.default_rng(0).normal(size=12)
    assert est.iqm(values) == pytest.approx(scipy_stats.trim_mean(values, 0.25))


def test_estimators_vectorise_over_an_axis():
    batch = np.array([[1, 2, 3, 4, 5, 6, 7, 8], [2, 2, 2, 2, 2, 2, 2, 2]], dtype=float)
    assert est.iqm(batch, axis=-1) == pytest.approx([4.5, 2.0])
    assert est.iqm(batch.T, axis=0) == pytest.approx([4.5, 2.0])
    assert est.mean(batch, axis=1) == pytest.approx([4.5, 2.0])


def test_probability_of_improvement_by_hand():
    # pairs (x, y): 3>1, 3=3, 3<5, 4>1, 4>3, 4<5 -> (3 + 0.5) / 6
    assert est.probability_of_improvement([3, 4], [1, 3, 5]) == pytest.approx(7 / 12)
    # ties only count half: 1<2 twice, 2=2 twice, 3>2 twice -> (2 + 1) / 6
    assert est.probability_of_improvement([1, 2, 3], [2, 2]) == pytest.approx(0.5)
    assert est.probability_of_improvement([5, 6], [1, 2]) == 1.0
    assert est.probability_of_improvement([1, 2], [5, 6]) == 0.0


def test_probability_of_improvement_equals_mann_whitney_u_over_pairs():
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, 7), rng.integers(0, 5, 5)
    u = scipy_stats.mannwhitneyu(x, y).statistic
    assert est.probability_of_improvement(x, y) == pytest.approx(u / (7 * 5))


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    values = np.array([0.41, 0.47, 0.52, 0.44, 0.50, 0.39])
    first = est.bootstrap_ci(values, "mean", seed=3, n_resamples=1000)
    again = est.bootstrap_ci(values, "mean", seed=3, n_resamples=1000)
    other = est.bootstrap_ci(values, "mean", seed=4, n_resamples=1000)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.estimate == pytest.approx(values.mean())
    assert values.min() <= first.low < first.estimate < first.high <= values.max()
    assert first.method == "percentile" and first.confidence == 0.95


def test_bootstrap_ci_bca_and_named_statistics():
    values = np.arange(1.0, 9.0)
    bca = est.bootstrap_ci(values, "iqm", method="BCa", n_resamples=1000)
    assert bca.estimate == pytest.approx(4.5)
    assert bca.low < 4.5 < bca.high and bca.method == "BCa"
    custom = est.bootstrap_ci(values, lambda v, axis=-1: np.max(v, axis=axis), n_resamples=200)
    assert custom.estimate == 8.0
    with pytest.raises(ValueError, match="unknown statistic"):
        est.bootstrap_ci(values, "mode")


def test_bootstrap_ci_degenerate_cases():
    constant = est.bootstrap_ci([0.5, 0.5, 0.5], method="BCa", n_resamples=100)
    assert (constant.estimate, constant.low, constant.high) == (0.5, 0.5, 0.5)
    single = est.bootstrap_ci([0.7], n_resamples=100)
    assert single.estimate == 0.7 and np.isnan(single.low) and np.isnan(single.high)


def test_difference_ci_paired_removes_shared_seed_variance():
    seed_effect = np.array([0.0, 10.0, 20.0, 30.0])
    x, y = seed_effect + 1.0, seed_effect
    paired = est.difference_ci(x, y, paired=True, n_resamples=500)
    unpaired = est.difference_ci(x, y, paired=False, n_resamples=500)
    assert (paired.estimate, paired.low, paired.high) == (1.0, 1.0, 1.0)
    assert unpaired.estimate == 1.0 and unpaired.low < 0 < unpaired.high
    with pytest.raises(ValueError):
        est.difference_ci([1, 2], [1, 2, 3], paired=True)


def test_probability_of_improvement_ci():
    interval = est.probability_of_improvement_ci([3, 4, 5, 6], [1, 2, 3, 4], n_resamples=500)
    # pairs: 3: 2 wins + 1 tie; 4: 3 + 1 tie; 5, 6: 4 each -> (13 + 1) / 16
    assert interval.estimate == pytest.approx(14 / 16)
    assert 0 <= interval.low <= interval.estimate <= interval.high <= 1


def test_stratified_bootstrap_keeps_every_stratum():
    easy, hard = [0.9, 0.9, 0.9], [0.1, 0.1, 0.1, 0.1, 0.1]
    interval = est.stratified_bootstrap_ci({"easy": easy, "hard": hard}, "mean", n_resamples=200)
    # each resample keeps 3 easy and 5 hard scores, so the pooled mean never moves
    assert interval.estimate == pytest.approx((2.7 + 0.5) / 8)
    assert interval.low == pytest.approx(interval.estimate)
    assert interval.high == pytest.approx(interval.estimate)
    pooled = est.bootstrap_ci(easy + hard, "mean", n_resamples=200)
    assert pooled.high - pooled.low > 0.1


def test_interval_excludes():
    interval = est.Interval(1.0, 0.5, 1.5, 0.95, "percentile")
    assert interval.excludes(0.0) and not interval.excludes(1.0)
    assert not est.Interval(1.0, np.nan, np.nan, 0.95, "percentile").excludes(0.0)


# --------------------------------------------------------------------------- Student t intervals

T1 = math.tan(0.475 * math.pi)  # t_{0.975, 1}: with 1 df the t distribution is Cauchy
T2 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))  # t_{0.975, 2} = (2p - 1) sqrt(2 / (4p(1-p)))


def test_t_quantiles_used_below_by_hand():
    assert T1 == pytest.approx(12.7062, abs=1e-4)
    assert T2 == pytest.approx(4.3027, abs=1e-4)


def test_t_interval_of_two_values_by_hand():
    # [1, 3]: mean 2, s = sqrt(2), s / sqrt(2) = 1 -> 2 +- t_{0.975, 1}
    interval = est.t_interval([1, 3])
    assert (interval.estimate, interval.method) == (2.0, "t")
    assert interval.low == pytest.approx(2 - T1) and interval.high == pytest.approx(2 + T1)
    assert interval.low == pytest.approx(-10.7062, abs=1e-4)


def test_t_interval_of_three_values_and_degenerate_cases():
    # [0, 1, 2]: mean 1, s = 1, se = 1 / sqrt(3), df = 2
    interval = est.t_interval([0, 1, 2])
    assert interval.high - 1 == pytest.approx(T2 / math.sqrt(3))
    assert est.t_interval([0, 1, 2], confidence=0.5).high < interval.high
    constant = est.t_interval([0.5, 0.5])
    assert (constant.low, constant.high) == (0.5, 0.5)
    single = est.t_interval([0.7])
    assert single.estimate == 0.7 and np.isnan(single.low) and np.isnan(single.high)


def test_t_interval_is_wider_than_the_bootstrap_of_two_values():
    values = [0.70, 0.72]
    t = est.t_interval(values)
    bootstrap = est.bootstrap_ci(values, n_resamples=500)
    # the percentile bootstrap of 2 values never leaves [0.70, 0.72]; the t-interval is +- 0.127
    assert 0.70 <= bootstrap.low and bootstrap.high <= 0.72
    assert t.high - t.low == pytest.approx(2 * T1 * 0.01)


def test_paired_difference_t_interval_is_the_t_interval_of_the_differences():
    # d = [1, 3] -> 2 +- t_{0.975, 1}
    interval = est.difference_t_interval([2, 5], [1, 2], paired=True)
    assert interval.method == "paired t" and interval.estimate == 2.0
    assert (interval.low, interval.high) == pytest.approx((2 - T1, 2 + T1))
    with pytest.raises(ValueError):
        est.difference_t_interval([1, 2], [1, 2, 3], paired=True)


def test_welch_difference_t_interval_by_hand():
    # x = [1, 3], y = [4, 6]: variances 2 and 2, se^2 = 2/2 + 2/2 = 2, df = 2^2 / (1 + 1) = 2
    interval = est.difference_t_interval([1, 3], [4, 6])
    assert interval.method == "Welch t" and interval.estimate == -3.0
    half = T2 * math.sqrt(2)
    assert (interval.low, interval.high) == pytest.approx((-3 - half, -3 + half))
    assert half == pytest.approx(6.085, abs=1e-3)
    single = est.difference_t_interval([1], [4, 6])
    assert single.estimate == -4.0 and np.isnan(single.low)
    same = est.difference_t_interval([1, 1], [2, 2])
    assert (same.low, same.high) == (-1.0, -1.0)


@pytest.mark.parametrize("paired", [True, False])
def test_difference_t_interval_excludes_zero_exactly_when_the_t_test_rejects(paired):
    from grpo_lab.analysis import stats

    rng = np.random.default_rng(5)
    outcomes = set()
    for _ in range(40):
        x, y = rng.normal(0.6, 0.3, 3), rng.normal(0, 0.3, 3)
        interval = est.difference_t_interval(x, y, paired=paired)
        test = stats.paired_t(x, y) if paired else stats.welch_t(x, y)
        assert interval.excludes(0.0) == (test.pvalue < 0.05)
        outcomes.add(test.pvalue < 0.05)
    assert outcomes == {True, False}  # both sides of the boundary were checked


def test_not_estimable():
    interval = est.not_estimable(0.9)
    assert interval.method == est.NOT_ESTIMABLE and interval.confidence == 0.9
    assert np.isnan(interval.estimate) and not interval.excludes(0.0)
