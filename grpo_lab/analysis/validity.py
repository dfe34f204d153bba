"""Checks that a comparison between arms measures what it claims to measure.

Each check returns human-readable warnings (an empty list means nothing suspicious was found):

- unequal compute: final ``budget/samples``, ``budget/tokens``, ``budget/updates`` (and
  ``budget/prompts``) differ by more than ``tolerance`` (1%) between arms;
- confounded configs: arms differ in config params other than the declared factors and seed;
- too few seeds: for a pair of arms, the observed difference with the observed pooled sd needs
  more seeds per arm (``stats.required_seeds``) than the arms have;
- unbalanced seeds: arms have different numbers of seeds, or lack seeds that other arms have.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from grpo_lab.analysis.frame import (
    BUDGET_METRICS,
    FACTOR_PREFIX,
    PARAM_PREFIX,
    final_values,
)
from grpo_lab.analysis.stats import seeds_needed
from grpo_lab.conventions import NOT_RESULT_KEYS, is_result_key

# Params that legitimately differ between runs of one comparison besides the factors: the seed, and
# the keys that do not change what a run computes (conventions.NOT_RESULT_KEYS, the list the config
# hash leaves out). An ignored name matches the whole key or its last dotted part.
DEFAULT_IGNORED_PARAMS = ("seed",) + NOT_RESULT_KEYS


def _factor_keys(frame: pd.DataFrame, factors: Iterable[str] | None) -> list[str]:
    if factors is None:
        return [c[len(FACTOR_PREFIX):] for c in frame.columns if c.startswith(FACTOR_PREFIX)]
    if isinstance(factors, str):
        return [factors]
    return list(factors)


def _within(key: str, factor: str) -> bool:
    """Whether param ``key`` is factor ``factor`` or a part of its value: MLflow holds a list- or
    mapping-valued key as one param per item (``task.rewards/1/fn``, ``reward.model/prompts``), and a
    mapping-valued factor sets its sub-keys (``loss`` sets ``loss.clip_low``)."""
    dotted = key.replace("/", ".")
    return dotted == factor or dotted.startswith(factor + ".")


def _shown_above(value: float, limit: float) -> str:
    """``value`` (> ``limit``) with one decimal, or as many more as it takes to read as above
    ``limit`` (1.04, not 1.0, against a limit of 1)."""
    for decimals in range(1, 6):
        text = f"{value:.{decimals}f}"
        if float(text) > limit:
            return text
    return f"{value:.6g}"


def check_compute(frame: pd.DataFrame, *, tolerance: float = 0.01) -> list[str]:
    """Warn when the final compute budgets of arms differ by more than ``tolerance``."""
    warnings = []
    for budget in BUDGET_METRICS:
        if budget not in frame or frame[budget].isna().all():
            continue
        per_arm = final_values(frame, budget).groupby("arm")["value"].mean()
        if len(per_arm) < 2:
            continue
        low, high = per_arm.min(), per_arm.max()
        if high > 0 and (high - low) / high > tolerance:
            detail = ", ".join(f"{arm}: {value:.6g}" for arm, value in per_arm.items())
            warnings.append(
                f"unequal compute: final {budget} differs by "
                f"{_shown_above(100 * (high - low) / high, 100 * tolerance)}% "
                f"between arms (> {100 * tolerance:g}%): {detail}"
            )
    return warnings


def check_configs(
    frame: pd.DataFrame,
    factors: Iterable[str] | None = None,
    *,
    ignore: Sequence[str] = DEFAULT_IGNORED_PARAMS,
) -> list[str]:
    """Warn when arms differ in config params other than the declared factors and ``seed``."""
    factor_keys = set(_factor_keys(frame, factors))
    skipped = factor_keys | set(ignore)
    runs = frame.drop_duplicates("run_id")
    differing = []
    for column in sorted(c for c in runs.columns if c.startswith(PARAM_PREFIX)):
        key = column[len(PARAM_PREFIX):]
        if key in skipped or key.rsplit(".", 1)[-1] in ignore or not is_result_key(key, ignore):
            continue
        if any(_within(key, factor) for factor in factor_keys):  # a part of a factor's value
            continue
        values_per_arm = runs.groupby("arm")[column].agg(
            lambda s: tuple(sorted(set(s.fillna("<unset>").astype(str))))
        )
        if values_per_arm.nunique() > 1:
            differing.append(key)
    if not differing:
        return []
    return [
        "arms differ in config params other than the factors "
        f"({', '.join(sorted(factor_keys)) or 'none declared'}) and seed: "
        f"{', '.join(differing)}; the comparison confounds them with the factor"
    ]


def check_seeds(frame: pd.DataFrame) -> list[str]:
    """Warn about arms with different numbers of seeds and seeds missing from some arms."""
    runs = frame.drop_duplicates("run_id")
    seeds_per_arm = {arm: set(group["seed"]) for arm, group in runs.groupby("arm")}
    warnings = []
    counts = {arm: int((runs["arm"] == arm).sum()) for arm in seeds_per_arm}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{arm}: {n}" for arm, n in counts.items())
        warnings.append(f"arms have different numbers of seeds: {detail}")
    all_seeds = set().union(*seeds_per_arm.values()) if seeds_per_arm else set()
    for arm, seeds in seeds_per_arm.items():
        missing = sorted(all_seeds - seeds)
        if missing:
            warnings.append(f"arm {arm} is missing seeds {missing} that other arms have")
    for arm, group in runs.groupby("arm"):
        repeated = sorted(group["seed"][group["seed"].duplicated()].unique())
        if repeated:
            warnings.append(f"arm {arm} has several finished runs for seeds {repeated}")
    return warnings


def check_power(
    frame: pd.DataFrame,
    metric: str,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> list[str]:
    """Warn when a pair of arms has fewer seeds than the observed effect would need.

    Effect = |mean_a - mean_b| of final values; pooled sd = sqrt((s_a^2 + s_b^2) / 2); needed
    seeds per arm from ``stats.seeds_needed`` (``required_seeds(effect, pooled_sd)``).
    """
    if metric not in frame:
        return [f"metric {metric} was not logged by any run; cannot check seeds against effect"]
    finals = final_values(frame, metric)
    values = {arm: group["value"].to_numpy() for arm, group in finals.groupby("arm")}
    if pairs is None:
        pairs = list(itertools.combinations(sorted(values), 2))
    warnings = []
    for a, b in pairs:
        if a not in values or b not in values:
            continue
        x, y = values[a], values[b]
        if min(len(x), len(y)) < 2:
            warnings.append(
                f"{a} vs {b}: fewer than 2 seeds in an arm; no variance estimate for {metric}"
            )
            continue
        effect = abs(float(np.mean(x) - np.mean(y)))
        pooled_sd = math.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2)
        needed = seeds_needed(x, y, alpha=alpha, power=power)
        have = min(len(x), len(y))
        if have < needed:
            needed_text = "no finite number of" if math.isinf(needed) else f"{needed}"
            warnings.append(
                f"too few seeds for {a} vs {b} on {metric}: observed difference {effect:.4g} "
                f"with pooled sd {pooled_sd:.4g} needs {needed_text} seeds per arm for "
                f"{power:.0%} power at alpha={alpha:g}; have {have}"
            )
    return warnings


def check_comparison(
    frame_or_runs: pd.DataFrame | str,
    factors: Iterable[str] | None = None,
    *,
    metric: str = "eval/accuracy",
    pairs: Sequence[tuple[str, str]] | None = None,
    tolerance: float = 0.01,
    alpha: float = 0.05,
    power: float = 0.8,
    ignore_params: Sequence[str] = DEFAULT_IGNORED_PARAMS,
    tracking_uri: str | None = None,
) -> list[str]:
    """All validity warnings for comparing the arms of a tidy frame (or a grid name to load).

    ``factors`` are the config keys the comparison is about (e.g. ``["method"]``); ``None``
    takes them from the runs' ``grpo_lab.factors`` tags. ``pairs`` limits the power check to
    these (arm, arm) pairs; default all pairs.
    """
    if isinstance(frame_or_runs, str):
        from grpo_lab.analysis.frame import load_runs

        frame = load_runs(frame_or_runs, tracking_uri=tracking_uri)
    else:
        frame = frame_or_runs
    if frame.empty:
        return ["no finished runs to compare"]
    warnings = []
    if frame["arm"].nunique() < 2:
        warnings.append(f"only one arm ({frame['arm'].iloc[0]}); nothing to compare")
    warnings += check_compute(frame, tolerance=tolerance)
    warnings += check_configs(frame, factors, ignore=ignore_params)
    warnings += check_seeds(frame)
    warnings += check_power(frame, metric, pairs=pairs, alpha=alpha, power=power)
    return warnings
