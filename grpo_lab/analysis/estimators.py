"""Pure point estimators over seeds, and their uncertainty (bootstrap and Student t).

Layer 3 and 4 of the analysis (load -> tidy frame -> **estimators -> uncertainty** -> plots).
Everything here takes numpy arrays of per-seed scores and returns numbers; nothing knows about
MLflow, pandas or plotting, so each function can be checked by hand on a short literal array.

Bootstrap intervals need enough seeds to resample: with 2-4 values the percentile bootstrap
can only return values between the extremes of a handful of points and is far too narrow. For
so few seeds use the Student t-intervals (``t_interval``, ``difference_t_interval``), which
are exact under normality at any n >= 2.

The point estimators accept an ``axis`` argument (default: the last axis) so that
``scipy.stats.bootstrap`` can call them vectorised over all resamples at once.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats as _scipy_stats

Statistic = Callable[..., np.ndarray]

DEFAULT_RESAMPLES = 2_000


# --------------------------------------------------------------------------- point estimators


def mean(values, axis: int = -1) -> np.ndarray | float:
    """Arithmetic mean ``sum(x) / n`` along ``axis``."""
    return np.mean(np.asarray(values, dtype=float), axis=axis)


def median(values, axis: int = -1) -> np.ndarray | float:
    """Median along ``axis`` (average of the two middle order statistics when n is even)."""
    return np.median(np.asarray(values, dtype=float), axis=axis)


def _iqm_weights(n: int) -> np.ndarray:
    """Weight of each order statistic x_(i), i = 0..n-1, in the interquartile mean.

    Order statistic i owns the slice [i/n, (i+1)/n) of the empirical quantile function; its
    weight is the length of that slice inside [0.25, 0.75], divided by 0.5 so weights sum to 1.
    """
    left = np.arange(n) / n
    right = (np.arange(n) + 1) / n
    overlap = np.clip(np.minimum(right, 0.75) - np.maximum(left, 0.25), 0.0, None)
    return overlap / 0.5


def iqm(values, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% of the sorted values.

    Definition used (fractionally weighted, i.e. the mean of the empirical quantile function
    over [0.25, 0.75])::

        IQM = (1 / 0.5) * integral_{0.25}^{0.75} F^{-1}(u) du
            = sum_i w_i x_(i),   w_i = |[i/n, (i+1)/n) ∩ [0.25, 0.75]| / 0.5

    so a point straddling a quartile counts with the fraction of it that lies inside.
    When n is a multiple of 4 this equals ``scipy.stats.trim_mean(x, 0.25)`` (and rliable's
    IQM) exactly: n/4 whole points are dropped at each end. For other n, ``trim_mean`` drops
    ``int(0.25 n)`` whole points instead, e.g. for x = [0, 0, 1, 2, 10, 10] (n = 6)::

        here:      1/6*0 + 1/3*1 + 1/3*2 + 1/6*10 = 8/3
        trim_mean: (0 + 1 + 2 + 10) / 4           = 3.25

    Example with n = 8: iqm([1..8]) = (3 + 4 + 5 + 6) / 4 = 4.5 (both definitions).
    """
    array = np.asarray(values, dtype=float)
    ordered = np.sort(array, axis=axis)
    ordered = np.moveaxis(ordered, axis, -1)
    weights = _iqm_weights(ordered.shape[-1])
    return ordered @ weights


STATISTICS: dict[str, Statistic] = {"mean": mean, "median": median, "iqm": iqm}


def resolve_statistic(statistic: str | Statistic) -> Statistic:
    """Map a name ('mean', 'median', 'iqm') to its function; pass callables through."""
    if callable(statistic):
        return statistic
    try:
        return STATISTICS[statistic]
    except KeyError:
        raise ValueError(
            f"unknown statistic {statistic!r}; use one of {sorted(STATISTICS)} or a callable "
            "f(values, axis) -> array"
        ) from None


def probability_of_improvement(x, y, axis: int = -1) -> np.ndarray | float:
    """P(X > Y) + 0.5 P(X = Y) over all n_x * n_y pairs (the Mann-Whitney U / (n_x n_y)).

    0.5 means neither arm tends to beat the other; 1 means every run of ``x`` beats every run
    of ``y``. Example: x = [3, 4], y = [1, 3, 5] -> pairs > : 3, = : 1, of 6 -> 3.5 / 6 = 7/12.
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    greater = (x[..., :, None] > y[..., None, :]).mean(axis=(-2, -1))
    equal = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    return greater + 0.5 * equal


# --------------------------------------------------------------------------- uncertainty


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float
    confidence: float
    method: str

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside the interval (NaN bounds never exclude)."""
        return bool(self.low > value or self.high < value)

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _run_bootstrap(
    samples: Sequence[np.ndarray],
    statistic: Statistic,
    estimate: float,
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
    method: str,
    paired: bool = False,
) -> Interval:
    """Call scipy.stats.bootstrap with a fixed Generator and handle the degenerate cases.

    With a single observation in some sample the bootstrap is undefined (NaN bounds); when all
    resampled statistics are equal (e.g. all seeds scored the same) the interval collapses to
    the estimate instead of the NaN that BCa would give.
    """
    method_key = {"percentile": "percentile", "bca": "BCa", "basic": "basic"}.get(method.lower())
    if method_key is None:
        raise ValueError(f"method must be 'percentile', 'BCa' or 'basic', got {method!r}")
    if any(len(sample) < 2 for sample in samples):
        return Interval(float(estimate), np.nan, np.nan, confidence, method_key)

    def vectorised(*resamples, axis=-1):
        return statistic(*resamples, axis=axis)

    with np.errstate(invalid="ignore", divide="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = _scipy_stats.bootstrap(
                tuple(samples),
                vectorised,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method=method_key,
                paired=paired,
                vectorized=True,
                axis=-1,
                rng=np.random.default_rng(seed),
            )
    low, high = result.confidence_interval
    distribution = np.asarray(result.bootstrap_distribution)
    if np.ptp(distribution) == 0:
        low = high = float(distribution.flat[0])
    return Interval(float(estimate), float(low), float(high), confidence, method_key)


def bootstrap_ci(
    values,
    statistic: str | Statistic = "mean",
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    method: str = "percentile",
) -> Interval:
    """Bootstrap confidence interval of ``statistic(values)`` over seeds.

    Resamples the n values with replacement ``n_resamples`` times (scipy.stats.bootstrap, fixed
    ``numpy.random.default_rng(seed)`` so the interval is reproducible). ``method`` is
    'percentile' (the alpha/2 and 1-alpha/2 quantiles of the resampled statistic) or 'BCa'
    (bias-corrected and accelerated, Efron 1987). Percentile is the default because with the
    4-10 seeds typical here the BCa jackknife acceleration is itself noisy.
    """
    array = np.asarray(values, dtype=float).ravel()
    function = resolve_statistic(statistic)
    return _run_bootstrap(
        [array], function, float(function(array)),
        confidence=confidence, n_resamples=n_resamples, seed=seed, method=method,
    )


def stratified_bootstrap_ci(
    groups: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
    statistic: str | Statistic = "iqm",
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    method: str = "percentile",
) -> Interval:
    """Bootstrap CI of ``statistic`` over the pooled scores of several strata (e.g. tasks).

    Each stratum (the seeds of one task) is resampled with replacement on its own, keeping its
    size, and the statistic is applied to the concatenation of all resampled strata. This keeps
    every task represented in every resample, unlike resampling the pooled scores.
    """
    samples = [np.asarray(group, dtype=float).ravel() for group in
               (groups.values() if isinstance(groups, Mapping) else groups)]
    function = resolve_statistic(statistic)

    def pooled(*strata, axis=-1):
        return function(np.concatenate(strata, axis=axis), axis=axis)

    return _run_bootstrap(
        samples, pooled, float(pooled(*samples)),
        confidence=confidence, n_resamples=n_resamples, seed=seed, method=method,
    )


def probability_of_improvement_ci(
    x,
    y,
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    method: str = "percentile",
) -> Interval:
    """``probability_of_improvement(x, y)`` with a bootstrap CI (x and y resampled separately)."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    return _run_bootstrap(
        [x, y], probability_of_improvement, float(probability_of_improvement(x, y)),
        confidence=confidence, n_resamples=n_resamples, seed=seed, method=method,
    )


def difference_ci(
    x,
    y,
    *,
    paired: bool = False,
    statistic: str | Statistic = "mean",
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    method: str = "percentile",
) -> Interval:
    """Bootstrap CI of ``statistic(x) - statistic(y)``.

    ``paired=True`` (x[i] and y[i] share seed i and the same start) resamples seed indices
    jointly, which removes the between-seed variance the two arms share; ``paired=False``
    resamples each arm on its own.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if paired and len(x) != len(y):
        raise ValueError(f"paired difference needs equal lengths, got {len(x)} and {len(y)}")
    function = resolve_statistic(statistic)

    def difference(a, b, axis=-1):
        return function(a, axis=axis) - function(b, axis=axis)

    return _run_bootstrap(
        [x, y], difference, float(difference(x, y)),
        confidence=confidence, n_resamples=n_resamples, seed=seed, method=method, paired=paired,
    )


# --------------------------------------------------------------------------- Student t intervals

T_METHODS = ("t", "paired t", "Welch t")
NOT_ESTIMABLE = "not estimable"


def not_estimable(confidence: float = 0.95) -> Interval:
    """An interval (and estimate) that the data cannot support, e.g. a probability of
    improvement from 2 seeds per arm: everything NaN, ``method`` says why."""
    return Interval(np.nan, np.nan, np.nan, confidence, NOT_ESTIMABLE)


def _t_half_width(se: float, df: float, confidence: float) -> float:
    """t_{(1+c)/2, df} * se; 0 when se is 0 (all values equal), NaN when df is not positive."""
    if se == 0:
        return 0.0
    if not np.isfinite(df) or df <= 0 or not np.isfinite(se):
        return np.nan
    return float(_scipy_stats.t.ppf((1 + confidence) / 2, df) * se)


def t_interval(values, *, confidence: float = 0.95) -> Interval:
    """Student t-interval of the mean: mean +- t_{(1+c)/2, n-1} * s / sqrt(n), s with ddof=1.

    Honest at small n (exact when the values are normal), unlike a bootstrap of 2-4 values.
    Example: [1, 3] -> mean 2, s = sqrt(2), s / sqrt(2) = 1, t_{0.975, 1} = tan(0.475 pi)
    = 12.706 -> [-10.706, 14.706]. NaN bounds for a single value.
    """
    array = np.asarray(values, dtype=float).ravel()
    if len(array) == 0:
        return Interval(np.nan, np.nan, np.nan, confidence, "t")
    centre = float(array.mean())
    if len(array) < 2:
        return Interval(centre, np.nan, np.nan, confidence, "t")
    half = _t_half_width(float(array.std(ddof=1) / np.sqrt(len(array))), len(array) - 1,
                         confidence)
    return Interval(centre, centre - half, centre + half, confidence, "t")


def difference_t_interval(x, y, *, paired: bool = False, confidence: float = 0.95) -> Interval:
    """t-interval of mean(x) - mean(y), the interval that matches ``stats.paired_t`` /
    ``stats.welch_t`` (it excludes 0 exactly when their p < 1 - confidence).

    Paired (x[i], y[i] share seed i): ``t_interval`` of d = x - y, df = n - 1. Unpaired
    (Welch): (mean_x - mean_y) +- t_{(1+c)/2, df} * se, se^2 = s_x^2/n_x + s_y^2/n_y and the
    Welch-Satterthwaite df = se^4 / ((s_x^2/n_x)^2/(n_x-1) + (s_y^2/n_y)^2/(n_y-1)).
    Example: x = [1, 3], y = [4, 6]: se^2 = 1 + 1 = 2, df = 4 / 2 = 2, t_{0.975, 2} = 4.3027
    -> -3 +- 6.085. NaN bounds when an arm has a single value.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if paired:
        if len(x) != len(y):
            raise ValueError(f"paired difference needs equal lengths, got {len(x)} and {len(y)}")
        within = t_interval(x - y, confidence=confidence)
        return dataclasses.replace(within, method="paired t")
    estimate = float(x.mean() - y.mean()) if len(x) and len(y) else np.nan
    if min(len(x), len(y)) < 2:
        return Interval(estimate, np.nan, np.nan, confidence, "Welch t")
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se2 = vx + vy
    df = se2**2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1)) if se2 > 0 else np.nan
    half = _t_half_width(float(np.sqrt(se2)), df, confidence)
    return Interval(estimate, estimate - half, estimate + half, confidence, "Welch t")
