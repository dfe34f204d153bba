"""The levels of a grid's factors and the labels they go by in arm labels, run names, claims,
tables and plots.

A factor is a list of values or a mapping of level names to values:

    factors:
      loss.aggregation: [token_mean, seq_mean_token_mean]      # labels: the values
      task.rewards:                                            # labels: the names
        correct_only: [{fn: correct}]
        with_format: [{fn: correct}, {fn: format, weight: 0.1}]

An unnamed level that is not a plain value gets a short label: a mapping the sub-keys in which
the factor's levels differ (``loss: [{clip_low: 0.1}, {clip_low: 0.3}]`` -> ``loss.clip_low=0.1``),
a list of reward functions their names and weights (``correct+0.1*format``); where such labels
would be long or could not tell two levels apart, the levels are numbered (``task.rewards=level2``)
and the report lists what each holds. Name the levels for labels of one's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grpo_lab.config import flatten
from grpo_lab.specs import SpecError

MAX_LABEL = 40  # characters of an unnamed level's label before the levels are numbered instead
RESERVED = ",="  # arm labels are key=value parts joined by commas


@dataclass(frozen=True)
class Level:
    """One level of a factor: the value it sets, its part of the arm label (``key=label``, or
    several parts for a mapping) and what the run's name shows of it."""

    value: Any
    label: str
    name: str


def _plain(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _summary(value: Any) -> str:
    """A list's items joined by '+': a reward function as its name (its weight in front unless 1)."""
    if isinstance(value, list):
        return "+".join(_summary(item) for item in value)
    if isinstance(value, dict):
        if "fn" in value:
            name = str(value.get("name") or str(value["fn"]).rsplit(":", 1)[-1].rsplit(".", 1)[-1])
            weight = value.get("weight", 1.0)
            return name if weight == 1 else f"{weight:g}*{name}"
        return "&".join(f"{k}:{_summary(v)}" for k, v in value.items())
    return str(value)


def _unnamed(key: str, values: list) -> list[Level]:
    if all(_plain(value) for value in values):  # the labels arm labels always had
        return [Level(value, f"{key}={value}", str(value)) for value in values]
    mappings = [flatten(value) for value in values if isinstance(value, dict)]
    differing = {sub for sub in set().union(*mappings) if len({repr(m.get(sub)) for m in mappings}) > 1}
    levels = []
    for value in values:
        if _plain(value):
            levels.append(Level(value, f"{key}={value}", str(value)))
        elif isinstance(value, dict):
            shown = {sub: v if _plain(v) else _summary(v) for sub, v in flatten(value).items()
                     if sub in differing or not differing}
            levels.append(Level(value, ",".join(f"{key}.{sub}={v}" for sub, v in shown.items()),
                                "_".join(f"{sub.rsplit('.', 1)[-1]}={v}" for sub, v in shown.items())))
        else:
            text = _summary(value)
            levels.append(Level(value, f"{key}={text}", text))
    labels: dict[str, Any] = {}
    clash = False
    for level in levels:
        clash |= labels.setdefault(level.label, level.value) != level.value
    text_of = [level.label.split(",") for level in levels]
    unreadable = any(any(ch in part.split("=", 1)[1] for ch in RESERVED) or len(part) > MAX_LABEL
                     for parts in text_of for part in parts)
    if clash or unreadable:  # numbered, by the position of each distinct value
        distinct: list = []
        for value in values:
            if value not in distinct:
                distinct.append(value)
        return [level if _plain(level.value) else
                Level(level.value, f"{key}=level{distinct.index(level.value) + 1}",
                      f"level{distinct.index(level.value) + 1}") for level in levels]
    return levels


def factor_levels(key: str, levels: Any, where: str) -> list[Level]:
    """The levels of factor ``key``: a non-empty list of values, or a mapping of level names to values."""
    if isinstance(levels, dict) and levels:
        out = []
        for name, value in levels.items():
            name = str(name)
            if not name.strip() or any(ch in name for ch in RESERVED):
                raise SpecError(f"{where}: factor {key} has a level named {name!r}; a level name is a non-empty word "
                                "without ',' or '=' (e.g. correct_only)")
            out.append(Level(value, f"{key}={name.strip()}", name.strip()))
        return out
    if isinstance(levels, list) and levels:
        return _unnamed(key, levels)
    raise SpecError(f"{where}: factor {key} must be a non-empty list of values ({key}: [a, b]) or a mapping of "
                    f"level names to values ({key}: {{name_a: a, name_b: b}})")


def arm_label(factors: dict) -> str:
    """The arm label of one combination of factor values, each labelled as a level of its own."""
    return ",".join(factor_levels(key, [value], "grid")[0].label for key, value in factors.items())
