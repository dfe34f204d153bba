"""Hypothesis tests, Holm and sample size against values computed by hand."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from grpo_lab.analysis import stats


def test_welch_t_against_the_formula():
    x, y = [1, 2, 3, 4], [2, 4, 6, 8, 10]
    # means 2.5 and 6; variances 5/3 and 10; se^2 = (5/3)/4 + 10/5 = 29/12
    se2 = 29 / 12
    t = (2.5 - 6) / math.sqrt(se2)
    df = se2**2 / (((5 / 3) / 4) ** 2 / 3 + (10 / 5) ** 2 / 4)
    result = stats.welch_t(x, y)
    assert result.statistic == pytest.approx(-2.2514363, abs=1e-6)
    assert result.statistic == pytest.approx(t)
    assert df == pytest.approx(5.52077, abs=1e-4)
    assert result.pvalue == pytest.approx(2 * scipy_stats.t.sf(abs(t), df))
    assert result.test == "welch_t" and result.n == (4, 5)


def test_paired_t_closed_form_with_two_degrees_of_freedom():
    # d = [1, 2, 3]: mean 2, sd 1 -> t = 2 sqrt(3); for df = 2, p = 1 - t / sqrt(t^2 + 2)
    result = stats.paired_t([2, 4, 6], [1, 2, 3])
    assert result.statistic == pytest.approx(2 * math.sqrt(3))
    assert result.pvalue == pytest.approx(1 - math.sqrt(12 / 14))
    assert result.n == (3, 3)
    with pytest.raises(ValueError):
        stats.paired_t([1, 2], [1, 2, 3])


def test_mann_whitney_exact_by_enumeration():
    # U_x = 0; of C(5, 2) = 10 equally likely splits one gives U = 0 and one U = 6
    result = stats.mann_whitney([1, 2], [3, 4, 5])
    assert result.statistic == 0.0
    assert result.pvalue == pytest.approx(2 / 10)


def test_wilcoxon_exact_all_positive():
    # all 5 differences positive: W- = 0; P = 2 * (1 / 2^5)
    result = stats.wilcoxon([2, 3, 4, 5, 6], [1, 1, 1, 1, 1])
    assert result.statistic == 0.0
    assert result.pvalue == pytest.approx(1 / 16)
    assert stats.wilcoxon([1, 2], [1, 2]).pvalue == 1.0


def test_permutation_test_exact_by_enumeration():
    # splits of {1,2,3,4}: differences -2, -1, 0, 0, 1, 2; |d| >= 2 in 2 of 6
    unpaired = stats.permutation_test([1, 2], [3, 4])
    assert unpaired.statistic == -2.0
    assert unpaired.pvalue == pytest.approx(1 / 3)
    # sign flips of d = [1, 2, 3]: sums 6, 4, 2, 0, 0, -2, -4, -6; |sum| >= 6 in 2 of 8
    paired = stats.permutation_test([2, 4, 6], [1, 2, 3], paired=True)
    assert paired.statistic == 2.0
    assert paired.pvalue == pytest.approx(2 / 8)


def test_permutation_test_monte_carlo_is_seeded():
    rng = np.random.default_rng(0)
    x, y = rng.normal(1, 1, 12), rng.normal(0, 1, 12)
    first = stats.permutation_test(x, y, n_resamples=500, seed=7)
    assert first == stats.permutation_test(x, y, n_resamples=500, seed=7)
    assert 0 < first.pvalue < 0.2


def test_holm_literal_example():
    # sorted 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone 0.06)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_holm_caps_at_one_is_monotone_and_keeps_nan():
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert stats.holm([0.02]) == pytest.approx([0.02])
    adjusted = stats.holm([0.04, np.nan, 0.01])
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.02)
    assert np.isnan(adjusted[1])
    p = np.random.default_rng(0).uniform(size=10)
    adjusted = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0) and np.all(adjusted >= p)


def test_required_seeds_normal_approximation():
    # 2 (1.959964 + 0.841621)^2 = 15.70 -> 16 per arm for a one-sd effect
    assert stats.required_seeds(1.0, 1.0) == 16
    assert stats.required_seeds(-2.0, 1.0) == 4  # 15.70 / 4 = 3.92
    assert stats.required_seeds(0.5, 1.0, alpha=0.05, power=0.9) == 85  # 2*3.2415^2*4 = 84.06
    assert stats.required_seeds(0.0, 1.0) == math.inf
    assert stats.required_seeds(0.1, 0.0) == 2


def test_seeds_needed_from_two_samples_by_hand():
    # effect 3 - 2 = 1; variances 2 and 2 -> pooled sd sqrt(2): 2 * 2.8016^2 * 2 = 31.4 -> 32
    assert stats.seeds_needed([1, 3], [2, 4]) == 32
    assert stats.seeds_needed([1, 3], [2, 4]) == stats.required_seeds(1.0, math.sqrt(2))
    assert stats.seeds_needed([1, 3], [3, 1]) == math.inf  # no difference at all
    assert math.isnan(stats.seeds_needed([1], [2, 4]))  # no sd from one value
