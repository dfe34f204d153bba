"""What every config section is made of: fields with their help text, and the checks that refuse
values with one line saying what to change."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from grpo_lab.errors import GrpoLabError

METHODS = ("sft", "rft", "online_rft", "dpo", "ppo", "grpo", "offpolicy_grpo", "reward_model")  # the built-in recipes
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")
POLICY_OBJECTIVES = ("clipped", "cispo")  # the built-in policy losses
ADVANTAGE_ESTIMATORS = ("group", "rloo", "process", "reinforce_pp", "gae", "indicator")  # the built-in estimators


class ConfigError(GrpoLabError, ValueError):
    """A config that cannot run; the message says what to change."""


def knob(default: Any, help: str, *, added: bool = False) -> Any:
    """A config field with its help text, the one `grpo-lab config` prints. `added`: a field added after
    the first version, left out of the config and SFT hashes while it holds its default, so the runs
    recorded before it existed keep their identity."""
    return field(default=default, metadata={"help": help, "added": added})


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _choice(name: str, value: Any, choices: tuple) -> None:
    _check(value in choices, f"{name} is {value!r}; choose one of {', '.join(map(str, choices))}")


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    ok = value >= 0 if zero_ok else value > 0
    _check(ok, f"{name} is {value}; it must be {'>= 0' if zero_ok else '> 0'}")


def _choice_or_path(name: str, value: Any, choices: tuple) -> None:
    """A built-in name, or an import path (``package.module:name``) of a registered component of one's own."""
    _check(value in choices or (isinstance(value, str) and ":" in value),
           f"{name} is {value!r}; choose one of {', '.join(map(str, choices))}, or name one of your own by import "
           "path (my_pkg.module:name)")
