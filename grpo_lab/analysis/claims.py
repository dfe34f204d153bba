"""Claims about a grid: what a claim says (`Claim`, parsed from text or a grid file's mapping) and
which arm a name in it means (`resolve_arm`). `grpo_lab.analysis.comparisons` tests them and
gives each a verdict; `grpo_lab.analysis.report` writes the result up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import pandas as pd

from grpo_lab.errors import GrpoLabError


class ReportError(GrpoLabError, ValueError):
    """A report that cannot be written as asked (no runs, an unknown arm or metric, a bad claim)."""


# Fewer seeds than this in an arm: no bootstrap intervals and no probability of improvement for
# it (t-intervals instead), and a CI that excludes 0 does not make a claim fail on its own.
MIN_SEEDS_FOR_CI = 5


def few_seeds(n: int | None) -> bool:
    """True when ``n`` seeds are too few for bootstrap intervals (``n < MIN_SEEDS_FOR_CI``)."""
    return n is not None and n < MIN_SEEDS_FOR_CI

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Claim:
    """A statement to test: arm ``better`` scores better than arm ``worse`` on ``metric``.

    ``metric=None`` uses the report's metric. ``at_least_as_good=True`` turns it into "better
    is at least as good as worse", which holds unless ``worse`` is significantly better.
    Arms are named by their ``grpo_lab.arm`` label (``method=grpo``) or, when unambiguous, by
    a factor value alone (``grpo``) or by some of its ``key=value`` parts
    (``method=grpo,estimator=process``; a key may drop its section prefix). ``step=s`` compares
    each run's value at its last evaluation at or before step ``s`` instead of its final value.
    ``margin=m`` makes it a non-inferiority claim with a margin: "better is not worse than worse by
    more than m" (in metric units), decided by the CI of the difference (implies at_least_as_good).
    """

    text: str
    better: str
    worse: str
    metric: str | None = None
    at_least_as_good: bool = False
    step: int | None = None
    margin: float | None = None

    def __post_init__(self):
        if self.better == self.worse:
            raise ReportError(f"claim {self.text!r} compares arm {self.better!r} with itself")
        if self.margin is not None and not self.margin > 0:
            raise ReportError(f"claim {self.text!r} has margin {self.margin}; a margin must be > 0")


def parse_claim(text: str, *, metric: str | None = None, step: int | None = None) -> Claim:
    """``"better>worse"`` (better beats worse) or ``"better>=worse"`` (at least as good)."""
    for operator, at_least in ((">=", True), (">", False)):
        if operator in text:
            better, worse = (part.strip() for part in text.split(operator, 1))
            if better and worse and ">" not in worse:
                kind = "is at least as good as" if at_least else "beats"
                return Claim(f"{better} {kind} {worse}", better, worse, metric, at_least, step)
    raise ReportError(f"claim {text!r} is not of the form 'better>worse' or 'better>=worse'")


CLAIM_KEYS = ("text", "better", "worse", "metric", "at_least_as_good", "step", "margin")


def claim_from_dict(entry: dict | str) -> Claim:
    """A claim from a grid file's ``claims:`` list: a ``"better>worse"`` string or a mapping
    with keys ``better``, ``worse`` and optionally ``text``, ``metric``, ``at_least_as_good``,
    ``step``, ``margin``."""
    if isinstance(entry, str):
        return parse_claim(entry)
    if not isinstance(entry, dict) or not {"better", "worse"} <= set(entry):
        raise ReportError(f"claim {entry!r} needs the keys better and worse")
    unknown = set(entry) - set(CLAIM_KEYS)
    if unknown:
        raise ReportError(f"claim {entry!r} has unknown keys {sorted(unknown)}; "
                          f"use {', '.join(CLAIM_KEYS)}")
    better, worse = str(entry["better"]), str(entry["worse"])
    margin = entry.get("margin")
    at_least = bool(entry.get("at_least_as_good", False)) or margin is not None
    kind = "is at least as good as" if at_least else "beats"
    if margin is not None:
        try:
            margin = float(margin)
        except (TypeError, ValueError):
            raise ReportError(f"claim {entry!r} has margin {margin!r}; give a number (e.g. 0.02)") from None
        kind = f"is not worse by more than {margin:g} than"
    text = entry.get("text") or f"{better} {kind} {worse}"
    step = entry.get("step")
    return Claim(str(text), better, worse, entry.get("metric"), at_least,
                 None if step is None else int(step), margin)


def view_label(metric: str, step: int | None) -> str:
    """How a (metric, step) view is named in tables: the metric, or ``metric@step<s>``."""
    return metric if step is None else f"{metric}@step{step}"


def up_to_step(frame: pd.DataFrame, step: int | None) -> pd.DataFrame:
    """The rows logged at or before ``step`` (all rows for ``None``), so that ``final_values``
    gives each run's value at its last evaluation at or before ``step``."""
    return frame if step is None else frame[frame["step"] <= step]


def _part_matches(wanted: str, part: str) -> bool:
    """``wanted`` names the arm part ``key=value``: equal, the value alone, or ``key=value`` with
    the key's dotted prefix left out (``estimator=process`` for ``advantage.estimator=process``)."""
    if wanted == part or part.split("=", 1)[-1] == wanted:
        return True
    if "=" not in wanted or "=" not in part:
        return False
    key, value = wanted.split("=", 1)
    part_key, part_value = part.split("=", 1)
    return value == part_value and part_key.endswith("." + key)


def resolve_arm(name: str, arms: Iterable[str]) -> str:
    """Exact arm label, else the one arm whose ``key=value`` parts include ``name`` or a value
    equal to ``name`` (so ``grpo`` finds ``method=grpo``); a comma-separated ``name`` must match
    a part of the arm with each of its parts."""
    arms = list(arms)
    if name in arms:
        return name
    wanted = [part.strip() for part in name.split(",")]
    matches = [
        arm for arm in arms
        if all(any(_part_matches(w, part) for part in arm.split(",")) for w in wanted)
    ]
    if len(matches) == 1:
        return matches[0]
    problem = "is ambiguous" if matches else "matches no arm"
    raise ReportError(f"arm {name!r} {problem}; arms: {arms}")
