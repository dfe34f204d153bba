"""Claims about a grid and their verdicts: per-arm estimates with bootstrap CIs, one
``Comparison`` per (metric, better arm, worse arm), Holm correction over the family, a verdict
per claim. `grpo_lab.analysis.report` writes the result up.

Verdict rule for a claim "``better`` beats ``worse``" (improvement = better - worse, sign
flipped when lower is better; p = Holm-adjusted p of the t test):

- strict claim: ``holds`` if p < alpha and improvement > 0; ``does not hold`` if the bootstrap
  CI of the improvement lies entirely below 0, or improvement < 0 with p < alpha;
  ``inconclusive`` otherwise.
- ``at_least_as_good`` claim (non-inferiority without a margin): ``does not hold`` under the
  same two conditions (``worse`` is significantly better), ``holds`` otherwise.
- claim with a ``margin`` m (non-inferiority with a margin, "not worse by more than m"): ``holds``
  if the CI of the improvement lies entirely above -m, ``does not hold`` if entirely below -m,
  ``inconclusive`` otherwise (with few seeds the CI is the t-interval of the difference).

Fewer than ``MIN_SEEDS_FOR_CI`` (5) seeds in an arm: a percentile bootstrap over 2-4 values is
far too narrow, so such an arm's mean gets a Student t-interval (its IQM no interval), a
comparison involving it gets the t-interval of the difference that matches its t test (paired t
or Welch), its probability of improvement is not estimable, the CI alone never fails a claim,
and the reason of the verdict says how few seeds there were and, for an inconclusive claim, how
many the observed difference would need (``stats.seeds_needed``).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from grpo_lab.analysis import estimators, stats
from grpo_lab.analysis.estimators import Interval
from grpo_lab.analysis.frame import arm_values, final_values, level_values
from grpo_lab.analysis.validity import check_comparison
from grpo_lab.analysis.claims import (  # noqa: F401  (MIN_SEEDS_FOR_CI: named where it decides)
    DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, MIN_SEEDS_FOR_CI, Claim, ReportError, few_seeds, resolve_arm, up_to_step,
    view_label,
)


@dataclass(frozen=True)
class Comparison:
    """``better`` vs ``worse`` on one metric; differences are better - worse in metric units."""

    metric: str
    better: str
    worse: str
    paired: bool
    pairing_reason: str
    n: tuple[int, int]
    difference: Interval
    improvement: Interval  # difference oriented so that > 0 favours ``better``
    primary: stats.TestResult  # Welch or paired t
    rank: stats.TestResult  # Mann-Whitney or Wilcoxon
    win_probability: Interval  # P(better run beats worse run); not estimable with few seeds
    primary_holm: float = np.nan
    rank_holm: float = np.nan
    step: int | None = None  # values at the last evaluation at or before this step; None = final

    @property
    def label(self) -> str:
        return view_label(self.metric, self.step)

    @property
    def few_seeds(self) -> bool:
        """An arm has fewer than ``MIN_SEEDS_FOR_CI`` seeds: t-intervals, no win probability."""
        return few_seeds(min(self.n))


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    comparison: Comparison
    verdict: str
    reason: str


def decide(
    improvement: float,
    improvement_ci: tuple[float, float],
    p_adjusted: float,
    *,
    at_least_as_good: bool = False,
    alpha: float = 0.05,
    seeds: int | None = None,
    needed_seeds: float | None = None,
    power: float = 0.8,
    margin: float | None = None,
) -> tuple[str, str]:
    """Verdict and its reason from the oriented improvement, its CI and the Holm-adjusted p.

    ``seeds`` (the smaller arm's count): below ``MIN_SEEDS_FOR_CI`` the CI alone decides nothing
    (a percentile bootstrap of 2-4 values is far too narrow); only the test does, and the reason
    says how few seeds there were. ``needed_seeds`` (``stats.seeds_needed`` for ``power``) is
    quoted in the reason of an inconclusive claim with few seeds when it exceeds ``seeds``."""
    significant = bool(p_adjusted < alpha)  # NaN compares False
    few = few_seeds(seeds)
    only = f" (only {seeds} seeds per arm)" if few else ""
    if margin is not None:
        return _decide_margin(improvement_ci, margin, only)
    if improvement_ci[1] < 0 and not few:
        return DOES_NOT_HOLD, "the CI of the difference lies entirely in the wrong direction"
    if improvement < 0 and significant:
        return DOES_NOT_HOLD, (f"wrong direction with adjusted p = {p_adjusted:.3g} < {alpha:g}"
                               f"{only}")
    if at_least_as_good:
        if few:
            return HOLDS, ("the worse-claimed arm is not significantly better, but with "
                           f"{seeds} seeds per arm only a large gap could show")
        return HOLDS, "the worse-claimed arm is not significantly better"
    if improvement > 0 and significant:
        return HOLDS, f"claimed direction with adjusted p = {p_adjusted:.3g} < {alpha:g}{only}"
    reason = f"adjusted p = {p_adjusted:.3g} is not below {alpha:g}"
    if not few:
        return INCONCLUSIVE, reason
    reason = f"too few seeds ({seeds} per arm): {reason}"
    if needed_seeds is not None and needed_seeds == np.inf:
        reason += "; the observed difference is 0, which no number of seeds resolves"
    elif needed_seeds is not None and np.isfinite(needed_seeds) and needed_seeds > seeds:
        reason += (f"; a difference this size needs about {needed_seeds:.0f} seeds per arm "
                   f"for {power:.0%} power")
    return INCONCLUSIVE, reason


def _pairing(frame: pd.DataFrame, a: str, b: str) -> tuple[bool, str]:
    """Pair by seed when both arms ran the same seeds from the same start (sft_hash tag)."""
    runs = frame.drop_duplicates("run_id")
    first, second = runs[runs["arm"] == a], runs[runs["arm"] == b]
    seeds_a, seeds_b = set(first["seed"]), set(second["seed"])
    if seeds_a != seeds_b or first["seed"].duplicated().any() or second["seed"].duplicated().any():
        return False, "seeds differ between the arms"
    if len(seeds_a) < 2:
        return False, "fewer than 2 seeds"
    starts = pd.merge(first[["seed", "sft_hash"]], second[["seed", "sft_hash"]], on="seed")
    same = (starts["sft_hash_x"].fillna("<none>") == starts["sft_hash_y"].fillna("<none>"))
    if not same.all():
        return False, "same seeds but different starting checkpoints (sft_hash)"
    return True, "same seeds and same start (sft_hash) in both arms"


def _decide_margin(ci: tuple[float, float], margin: float, only: str) -> tuple[str, str]:
    """Non-inferiority with a margin, from the CI of the improvement alone."""
    low, high = ci
    shown = f"the CI of the difference [{low:+.3g}, {high:+.3g}]"
    if low > -margin:
        return HOLDS, f"{shown} lies above -{margin:g}{only}"
    if high < -margin:
        return DOES_NOT_HOLD, f"{shown} lies below -{margin:g}{only}"
    return INCONCLUSIVE, f"{shown} reaches below -{margin:g}{only}"


def compare(
    frame: pd.DataFrame,
    metric: str,
    better: str,
    worse: str,
    *,
    paired: bool | None = None,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    n_resamples: int = estimators.DEFAULT_RESAMPLES,
    seed: int = 0,
    step: int | None = None,
) -> Comparison:
    """Tests, difference CI and win probability of ``better`` vs ``worse`` on final ``metric``
    (or on its value at the last evaluation at or before ``step``)."""
    frame = up_to_step(frame, step)
    values = arm_values(final_values(frame, metric))
    for arm in (better, worse):
        if arm not in values:
            raise ReportError(f"arm {arm!r} has no final value of {metric}")
    if paired is None:
        paired, reason = _pairing(frame, better, worse)
    else:
        reason = "set by the caller"
    x, y = values[better], values[worse]
    if paired:
        x, y = x.align(y, join="inner")
    x, y = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
    options = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
    if few_seeds(min(len(x), len(y))):
        difference = estimators.difference_t_interval(x, y, paired=paired, confidence=confidence)
        win = estimators.not_estimable(confidence)
    else:
        difference = estimators.difference_ci(x, y, paired=paired, **options)
        if higher_is_better:
            win = estimators.probability_of_improvement_ci(x, y, **options)
        else:
            win = estimators.probability_of_improvement_ci(y, x, **options)
    sign = 1.0 if higher_is_better else -1.0
    low, high = sorted((sign * difference.low, sign * difference.high))
    improvement = Interval(sign * difference.estimate, low, high, confidence, difference.method)
    primary = stats.paired_t(x, y) if paired else stats.welch_t(x, y)
    rank = stats.wilcoxon(x, y) if paired else stats.mann_whitney(x, y)
    return Comparison(metric, better, worse, paired, reason, (len(x), len(y)), difference,
                      improvement, primary, rank, win, step=step)


def _with_holm(comparisons: list[Comparison]) -> list[Comparison]:
    primary = stats.holm([c.primary.pvalue for c in comparisons])
    rank = stats.holm([c.rank.pvalue for c in comparisons])
    return [
        dataclasses.replace(c, primary_holm=float(p), rank_holm=float(r))
        for c, p, r in zip(comparisons, primary, rank)
    ]


@dataclass
class Analysis:
    """Everything the README shows, computed before any text is written. Tables are keyed by
    view label: the metric name for final values, ``metric@step<s>`` for values at step s
    (``views`` maps each label to its (metric, step))."""

    metrics: list[str]
    arm_tables: dict[str, pd.DataFrame]
    arm_intervals: dict[str, dict[str, Interval]]
    finals: dict[str, pd.DataFrame]
    comparisons: list[Comparison]
    results: list[ClaimResult]
    warnings: list[str] = field(default_factory=list)
    views: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    # arms with fewer than MIN_SEEDS_FOR_CI seeds in some table -> their smallest seed count
    few_seeds: dict[str, int] = field(default_factory=dict)
    confidence: float = 0.95  # of every interval above
    # arms whose labels name their levels (or number them) -> {factor: its value as JSON}
    levels: dict[str, dict[str, str]] = field(default_factory=dict)


def _arm_table(frame, finals, metric, *, confidence, n_resamples, seed):
    """Per arm: seeds, mean, sd, IQM and bootstrap CIs of mean and IQM (stratified by task
    when an arm's runs span several ``task.name`` values); with fewer than
    ``MIN_SEEDS_FOR_CI`` seeds a t-interval of the mean and no CI of the IQM. Column
    ``ci_method`` names the interval of the mean."""
    rows, intervals = [], {}
    task_column = "param:task.name"
    for arm, group in finals.groupby("arm", sort=True):
        values = group["value"].to_numpy(dtype=float)
        options = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
        tasks = None
        if task_column in frame:
            task_of = frame.drop_duplicates("run_id").set_index("run_id")[task_column]
            tasks = group["run_id"].map(task_of)
        if few_seeds(len(values)):
            mean_ci = estimators.t_interval(values, confidence=confidence)
            iqm_ci = dataclasses.replace(estimators.not_estimable(confidence),
                                         estimate=float(estimators.iqm(values)))
        elif tasks is not None and tasks.nunique() > 1:
            strata = [group.loc[tasks == task, "value"].to_numpy(float)
                      for task in sorted(tasks.unique())]
            mean_ci = estimators.stratified_bootstrap_ci(strata, "mean", **options)
            iqm_ci = estimators.stratified_bootstrap_ci(strata, "iqm", **options)
        else:
            mean_ci = estimators.bootstrap_ci(values, "mean", **options)
            iqm_ci = estimators.bootstrap_ci(values, "iqm", **options)
        intervals[arm] = mean_ci
        rows.append({
            "arm": arm, "seeds": len(values), "mean": mean_ci.estimate,
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else np.nan,
            "iqm": iqm_ci.estimate, "mean_low": mean_ci.low, "mean_high": mean_ci.high,
            "iqm_low": iqm_ci.low, "iqm_high": iqm_ci.high, "ci_method": mean_ci.method,
        })
    return pd.DataFrame(rows), intervals


def analyse(
    frame: pd.DataFrame,
    claims: Sequence[Claim],
    *,
    metric: str = "eval/accuracy",
    baseline: str | None = None,
    higher_is_better: bool = True,
    paired: bool | None = None,
    factors: Iterable[str] | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = estimators.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Analysis:
    """Compute the tables, comparisons (Holm-corrected as one family) and claim verdicts.

    Comparisons: one per claim, plus every arm against ``baseline`` when given; with neither
    claims nor a baseline, all pairs of arms. Holm runs over all of them, per test kind.
    """
    if frame.empty:
        raise ReportError("no finished runs to analyse; check the grid name (tag grpo_lab.grid) "
                          "and the tracking URI")
    arms = sorted(frame["arm"].unique())
    claims = [
        Claim(c.text, resolve_arm(c.better, arms), resolve_arm(c.worse, arms),
              c.metric or metric, c.at_least_as_good, c.step, c.margin)
        for c in claims
    ]
    keys: list[tuple[str, int | None, str, str]] = [
        (c.metric, c.step, c.better, c.worse) for c in claims
    ]
    if baseline is not None:
        base = resolve_arm(baseline, arms)
        for arm in arms:
            if (arm != base and (metric, None, arm, base) not in keys
                    and (metric, None, base, arm) not in keys):
                keys.append((metric, None, arm, base))
    if not keys:
        keys = [(metric, None, a, b) for a, b in itertools.combinations(arms, 2)]
    keys = list(dict.fromkeys(keys))
    view_keys = list(dict.fromkeys([(metric, None)] + [(k[0], k[1]) for k in keys]))
    views = {view_label(m, s): (m, s) for m, s in view_keys}
    missing = [m for m, _ in view_keys if m not in frame or frame[m].isna().all()]
    if missing:
        logged = sorted(c for c in frame.columns
                        if "/" in c and ":" not in c and frame[c].notna().any())
        raise ReportError(f"metric {missing[0]!r} was not logged by these runs; logged: "
                          f"{', '.join(logged)}")

    options = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
    finals, tables, intervals = {}, {}, {}
    for label, (name, step) in views.items():
        upto = up_to_step(frame, step)
        finals[label] = final_values(upto, name)
        tables[label], intervals[label] = _arm_table(upto, finals[label], name, **options)
    comparisons = _with_holm([
        compare(frame, m, b, w, paired=paired, higher_is_better=higher_is_better, step=s,
                **options)
        for m, s, b, w in keys
    ])
    by_key = {(c.metric, c.step, c.better, c.worse): c for c in comparisons}
    results = []
    for claim in claims:
        comparison = by_key[(claim.metric, claim.step, claim.better, claim.worse)]
        needed = None
        if comparison.few_seeds:
            values = arm_values(finals[view_label(claim.metric, claim.step)])
            needed = stats.seeds_needed(values[claim.better], values[claim.worse], alpha=alpha)
        verdict, reason = decide(
            comparison.improvement.estimate,
            (comparison.improvement.low, comparison.improvement.high),
            comparison.primary_holm,
            at_least_as_good=claim.at_least_as_good,
            alpha=alpha,
            seeds=min(comparison.n),
            needed_seeds=needed,
            margin=claim.margin,
        )
        results.append(ClaimResult(claim, comparison, verdict, reason))
    warnings = []
    for label, (name, step) in views.items():
        pairs = [(b, w) for m, s, b, w in keys if (m, s) == (name, step)]
        found = check_comparison(up_to_step(frame, step), factors, metric=name, pairs=pairs)
        if step is not None:
            found = [f"at step {step}: {w}" for w in found]
        warnings += [w for w in found if w not in warnings]
    few: dict[str, int] = {}
    for table in tables.values():
        for arm, seeds in zip(table["arm"], table["seeds"]):
            if few_seeds(seeds):
                few[arm] = min(int(seeds), few.get(arm, int(seeds)))
    return Analysis(list(views), tables, intervals, finals, comparisons, results, warnings,
                    views, dict(sorted(few.items())), confidence, level_values(frame))
