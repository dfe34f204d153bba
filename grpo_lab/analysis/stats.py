"""Hypothesis tests between two arms, multiple-comparison correction, and sample size.

Each test takes the per-seed final scores of two arms and returns a ``TestResult``; all tests
are two-sided. Use the paired versions (``paired_t``, ``wilcoxon``, ``permutation_test(...,
paired=True)``) only when x[i] and y[i] share seed i *and* the same starting checkpoint, so
that the pairing removes shared variance rather than inventing it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _scipy_stats

from grpo_lab.analysis.estimators import mean as _mean


@dataclass(frozen=True)
class TestResult:
    """Outcome of a two-sample test: ``n`` is (n_x, n_y); for paired tests both are n pairs."""

    __test__ = False  # not a pytest test class

    test: str
    statistic: float
    pvalue: float
    n: tuple[int, int]


def _as_arrays(x, y, *, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if paired and len(x) != len(y):
        raise ValueError(f"paired test needs equal lengths, got {len(x)} and {len(y)}")
    return x, y


def welch_t(x, y) -> TestResult:
    """Welch's unequal-variance t test.

    t = (mean_x - mean_y) / sqrt(s_x^2/n_x + s_y^2/n_y), with Welch-Satterthwaite degrees of
    freedom df = (s_x^2/n_x + s_y^2/n_y)^2 / ((s_x^2/n_x)^2/(n_x-1) + (s_y^2/n_y)^2/(n_y-1)).
    """
    x, y = _as_arrays(x, y, paired=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = _scipy_stats.ttest_ind(x, y, equal_var=False)
    return TestResult("welch_t", float(result.statistic), float(result.pvalue), (len(x), len(y)))


def paired_t(x, y) -> TestResult:
    """Paired t test on d = x - y: t = mean(d) / (sd(d) / sqrt(n)), df = n - 1."""
    x, y = _as_arrays(x, y, paired=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = _scipy_stats.ttest_rel(x, y)
    return TestResult("paired_t", float(result.statistic), float(result.pvalue), (len(x), len(y)))


def mann_whitney(x, y) -> TestResult:
    """Mann-Whitney U test; the statistic is U_x = #(x > y) + 0.5 #(x = y) over all pairs.

    Exact p-value for small samples without ties, normal approximation otherwise (scipy 'auto').
    """
    x, y = _as_arrays(x, y, paired=False)
    result = _scipy_stats.mannwhitneyu(x, y, alternative="two-sided")
    return TestResult(
        "mann_whitney", float(result.statistic), float(result.pvalue), (len(x), len(y))
    )


def wilcoxon(x, y) -> TestResult:
    """Wilcoxon signed-rank test on d = x - y; statistic min(W+, W-), zero differences dropped."""
    x, y = _as_arrays(x, y, paired=True)
    if np.all(x == y):
        return TestResult("wilcoxon", 0.0, 1.0, (len(x), len(y)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = _scipy_stats.wilcoxon(x, y, alternative="two-sided")
    return TestResult("wilcoxon", float(result.statistic), float(result.pvalue), (len(x), len(y)))


def permutation_test(
    x, y, *, paired: bool = False, n_resamples: int = 9_999, seed: int = 0
) -> TestResult:
    """Permutation test of the difference in means, statistic mean(x) - mean(y).

    Unpaired: relabels runs between the arms; paired: swaps x[i] and y[i] within each pair
    (sign flips of d). Exact when the number of distinct relabellings is at most
    ``n_resamples``, Monte Carlo with ``numpy.random.default_rng(seed)`` otherwise.
    """
    x, y = _as_arrays(x, y, paired=paired)

    def difference_of_means(a, b, axis=-1):
        return _mean(a, axis=axis) - _mean(b, axis=axis)

    result = _scipy_stats.permutation_test(
        (x, y),
        difference_of_means,
        permutation_type="samples" if paired else "independent",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        axis=-1,
        rng=np.random.default_rng(seed),
    )
    name = "paired_permutation" if paired else "permutation"
    return TestResult(name, float(result.statistic), float(result.pvalue), (len(x), len(y)))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    Sort p ascending, p_(1) <= ... <= p_(m); adjusted p_(i) = max_{j <= i} min(1, (m - j + 1)
    p_(j)). The running max keeps the adjustment monotone; rejecting where adjusted < alpha
    controls the family-wise error rate at alpha. NaN entries stay NaN and do not count in m.
    Example: [0.01, 0.04, 0.03] -> sorted 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1)
    -> [0.03, 0.06, 0.06].
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def required_seeds(effect: float, sd: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Seeds per arm for a two-sided two-sample comparison (normal approximation).

    n = ceil(2 (z_{1-alpha/2} + z_{power})^2 sd^2 / effect^2), at least 2. Example: effect = sd
    gives 2 (1.95996 + 0.84162)^2 = 15.70 -> 16. Returns ``inf`` when effect is 0 and sd > 0
    (no number of seeds resolves a zero difference).
    """
    effect = abs(float(effect))
    sd = float(sd)
    if sd <= 0:
        return 2
    if effect == 0:
        return math.inf
    z_alpha = _scipy_stats.norm.ppf(1 - alpha / 2)
    z_power = _scipy_stats.norm.ppf(power)
    return max(2, math.ceil(2 * (z_alpha + z_power) ** 2 * sd**2 / effect**2))


def seeds_needed(x, y, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Seeds per arm that the observed difference between two arms would need.

    ``required_seeds(|mean_x - mean_y|, sqrt((s_x^2 + s_y^2) / 2))``: the observed effect with
    the pooled sd (ddof=1). Example: x = [1, 3], y = [2, 4]: effect 1, pooled sd sqrt(2) ->
    2 * 2.8016^2 * 2 = 31.4 -> 32. NaN when an arm has fewer than 2 values (no sd).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if min(len(x), len(y)) < 2:
        return math.nan
    effect = float(np.mean(x) - np.mean(y))
    pooled_sd = math.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2)
    return required_seeds(effect, pooled_sd, alpha=alpha, power=power)
