"""Reward functions, and the weighted sum of several that a run trains on.

A reward function is called as ``fn(example, completion, finished)`` and returns a float:

- ``example``: the `Example` (``prompt``, ``answer`` the reference answer, ``target``, ``fields``
  the data's other columns);
- ``completion``: the decoded completion, without the end-of-sequence token;
- ``finished``: whether the end-of-sequence token was sampled (False: the completion ran out of
  tokens).

Keys of its YAML item besides ``fn``, ``weight`` and ``name`` are passed as keyword arguments, and
a function with a ``task`` parameter also gets the run's task. In a config::

    task:
      rewards:
        - {fn: correct, weight: 1.0}                 # a built-in, by name
        - {fn: format, weight: 0.2, pattern: "####"}
        - {fn: my_pkg.rewards:format_ok, weight: 0.5}   # one of your own, by import path

The reward of a completion is the weighted sum; each function's own value is logged as
``reward/<name>`` (``name``: the item's ``name``, else the registered name or the function's).
The task's verifier (`Task.is_correct`) stays the accuracy signal whatever the rewards are.

Built in (`REWARDS`): ``correct`` (the extracted answer matches the reference: the task's verifier,
or with ``extractor``/``pattern``/``compare``/``tolerance`` a check of one's own), ``format`` (the
completion finished and holds an answer the extractor finds, or matches ``pattern``) and
``length_penalty`` (0 up to ``free`` characters, falling linearly to -1 at ``limit``).
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from grpo_lab.errors import RewardError
from grpo_lab.imports import is_import_path
from grpo_lab.registry import Registry

from .answers import COMPARISONS, get_extractor
from .base import Example, TaskError

REWARDS: Registry[Callable[..., float]] = Registry("reward function", error=TaskError)
SPEC_KEYS = ("fn", "weight", "name")


def register_reward(name: str) -> Callable:
    """Decorator that adds a reward function to `REWARDS` under ``name``."""
    return REWARDS.register(name)


@register_reward("correct")
def correct(example: Example, completion: str, finished: bool, *, task=None, extractor: Optional[str] = None,
            pattern: Optional[str] = None, compare: str = "exact", tolerance: float = 1e-6) -> float:
    """1.0 when the completion finished and its answer matches the reference, else 0.0. Without
    ``extractor`` this is the task's own verifier."""
    if extractor is None and task is not None:
        return 1.0 if task.is_correct(example, completion, finished) else 0.0
    if not finished:
        return 0.0
    answer = get_extractor(extractor or "auto", pattern=pattern)(completion)
    return 1.0 if answer is not None and COMPARISONS[compare](answer, example.answer, tolerance) else 0.0


@register_reward("format")
def format_reward(example: Example, completion: str, finished: bool, *, task=None, pattern: Optional[str] = None,
                  extractor: Optional[str] = None) -> float:
    """1.0 when the completion finished and matches ``pattern`` (a regular expression searched in
    it) or, without one, holds an answer the extractor (default: the task's) finds; else 0.0."""
    if not finished:
        return 0.0
    if pattern is not None:
        return 1.0 if re.search(pattern, completion) else 0.0
    extract = get_extractor(extractor) if extractor else (task.extract_answer if task is not None
                                                          else get_extractor("auto"))
    return 1.0 if extract(completion) is not None else 0.0


@register_reward("length_penalty")
def length_penalty(example: Example, completion: str, finished: bool, *, limit: int = 200, free: int = 0) -> float:
    """0 up to ``free`` characters, then falling linearly to -1 at ``limit`` characters (and -1
    beyond)."""
    if limit <= free:
        raise ValueError(f"length_penalty needs limit > free, got limit={limit}, free={free}")
    return -min(1.0, max(0, len(completion) - free) / (limit - free))


@dataclass(frozen=True)
class RewardSpec:
    """One item of ``task.rewards``: the function's name or import path, its weight, the name it is
    logged under, and its keyword arguments."""

    fn: str
    weight: float
    name: str
    params: dict


def parse_specs(items: Any) -> list[RewardSpec]:
    """``task.rewards`` as specs: each item a name or import path (weight 1) or a mapping with
    ``fn``, optional ``weight`` and ``name``, and keyword arguments. Malformed items raise
    ``TaskError``."""
    if items is None:
        return []
    if not isinstance(items, (list, tuple)) or not items:
        raise TaskError(f"task.rewards must be a non-empty list of {{fn: ..., weight: ...}} items, got {items!r}")
    specs = []
    for i, item in enumerate(items):
        item = {"fn": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get("fn"), str) or not item["fn"]:
            raise TaskError(f"task.rewards[{i}] is {item!r}; write {{fn: correct, weight: 1.0}} (fn: a built-in "
                            f"name, {', '.join(REWARDS)}, or an import path package.module:function)")
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
            raise TaskError(f"task.rewards[{i}].weight is {weight!r}; it must be a finite number")
        fn = item["fn"]
        name = item.get("name") or (fn.rpartition(":")[2].rpartition(".")[2] if is_import_path(fn) else fn)
        params = {k: v for k, v in item.items() if k not in SPEC_KEYS}
        specs.append(RewardSpec(fn, float(weight), str(name), params))
    names = [s.name for s in specs]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise TaskError(f"two items of task.rewards are named {twice!r}; give one a name (name: ...), each is "
                        "logged as reward/<name>")
    return specs


def resolve(spec: RewardSpec) -> Callable[..., float]:
    """The function a spec names, checked to take its keyword arguments."""
    fn = REWARDS.get(spec.fn).obj
    if not callable(fn):
        raise TaskError(f"reward function {spec.fn!r} names a {type(fn).__name__}, not a function")
    try:
        signature = inspect.signature(fn)
        given = {"task": None} if "task" in signature.parameters and "task" not in spec.params else {}
        signature.bind(None, "", True, **spec.params, **given)
    except TypeError as exc:
        raise TaskError(f"reward function {spec.fn!r} cannot be called as fn(example, completion, finished"
                        f"{''.join(f', {k}=...' for k in spec.params)}): {exc}") from None
    except ValueError:  # no signature to read (a builtin): the call itself will tell
        pass
    return fn


def check_rewards(items: Any) -> list[RewardSpec]:
    """Parse ``task.rewards`` and resolve every function (importing those named by path)."""
    specs = parse_specs(items)
    for spec in specs:
        resolve(spec)
    return specs


class RewardSet:
    """The rewards of a run: ``evaluate`` gives each function's value, ``total`` their weighted sum."""

    def __init__(self, specs: list[RewardSpec], task=None):
        self.specs = specs
        self.functions = []
        for spec in specs:
            fn = resolve(spec)
            params = dict(spec.params)
            try:
                if "task" in inspect.signature(fn).parameters and "task" not in params:
                    params["task"] = task
            except ValueError:
                pass
            self.functions.append((fn, params))

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def evaluate(self, example: Example, completion: str, finished: bool) -> dict[str, float]:
        """Each function's reward of one completion, by name; a function that raises or returns
        anything but a finite number raises `RewardError` naming it, the prompt and the completion."""
        out = {}
        for spec, (fn, params) in zip(self.specs, self.functions):
            try:
                value = fn(example, completion, finished, **params)
            except Exception as exc:
                raise RewardError(f"reward function {spec.fn!r} raised {type(exc).__name__}: {exc} on prompt "
                                  f"{example.prompt!r} and completion {completion!r}") from None
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                what = f"{value!r} (a {type(value).__name__})"
                raise RewardError(f"reward function {spec.fn!r} returned {what} on prompt {example.prompt!r} and "
                                  f"completion {completion!r}; a reward function returns a finite float")
            out[spec.name] = float(value)
        return out

    def total(self, parts: dict[str, float]) -> float:
        return sum(spec.weight * parts[spec.name] for spec in self.specs)


def build_rewards(items: Any, task=None) -> Optional[RewardSet]:
    """The `RewardSet` of ``task.rewards`` for ``task``, or None when the config names none (the
    task's own ``reward`` is then the reward)."""
    specs = parse_specs(items)
    return RewardSet(specs, task) if specs else None
