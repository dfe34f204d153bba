"""What every config section is made of: fields with their help text, and the checks that refuse
values with one line saying what to change."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from grpo_lab.errors import GrpoLabError



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


def _component(name: str, value: Any) -> None:
    """A component's name (checked against its registry by `grpo_lab.methods.check_config`, where the
    registries are), or an import path (``package.module:name``) of one's own."""
    _check(isinstance(value, str) and bool(value.strip()),
           f"{name} is {value!r}; give a registered name or an import path (my_pkg.module:name)")
