"""Spec files: the YAML files of grids, sweeps and reports (a base config, dotted `set` overrides,
factors or a search space, seeds), read the same way by each.

A spec's `base` is a config file (next to the spec file, or from the working directory) or an
inline mapping; `set` maps dotted keys to values; a factor or `set` value that is a mapping sets
its keys one by one (merged into the section, not replacing it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from grpo_lab.config import Config, ConfigError, flatten, load_config, with_overrides


class SpecError(ConfigError):
    """A spec file that cannot run; the message says what to change."""


def read_spec(path: str | Path, *, kind: str, keys: tuple[str, ...] | None = None, example: str = "") -> dict:
    """The mapping in the spec file `path` (`kind` names it in messages: "grid", "sweep"); refuses a
    missing file, a folder, text that is not UTF-8 or not YAML, anything but a mapping, and (with
    `keys`) keys it does not know."""
    path = Path(path)
    hint = f" (see {example})" if example else ""
    if not path.exists():
        raise SpecError(f"{kind} file {path} does not exist; pass the path of a {kind} YAML{hint}")
    if path.is_dir():
        raise SpecError(f"{kind} file {path} is a folder; pass the path of a {kind} YAML{hint}")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise SpecError(f"{path} is not UTF-8 text; save the {kind} file as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path} is not valid YAML{where}; fix the syntax") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path} must hold a mapping of {kind} keys, not a {type(spec).__name__}")
    if keys is not None:
        unknown = [k for k in spec if k not in keys]
        if unknown:
            raise SpecError(f"{path}: unknown {kind} key {unknown[0]!r}; {kind} files take {', '.join(keys)}")
    return spec


def dotted(values: dict) -> dict:
    """Values that are mappings set their keys one by one: {"loss": {"a": 1}} -> {"loss.a": 1}."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in flatten(value).items()})
        else:
            out[key] = value
    return out


def base_config(spec: dict, folder: Path, where: str) -> Config:
    """The spec's `base` config with its `set` overrides."""
    base = spec.get("base")
    overrides = spec.get("set") or {}
    if not isinstance(overrides, dict):
        raise SpecError(f"{where}: 'set' must be a mapping of dotted keys, e.g. set: {{train.steps: 100}}")
    if isinstance(base, dict):
        config = load_config(None, base=base)
    elif isinstance(base, str):
        path = Path(base)
        if not path.exists() and (folder / base).exists():
            path = folder / base
        if not path.exists():
            raise SpecError(f"{where}: base config {base} not found (looked in the cwd and in {folder})")
        config = load_config(path)
    else:
        raise SpecError(f"{where}: 'base' must be a config file path or a config mapping")
    return with_overrides(config, **dotted(overrides)) if overrides else config


def seeds_of(spec: dict, default: int, where: str) -> list[int]:
    """`seeds`: a count (3 -> 0, 1, 2) or a list of ints; `default` alone when absent."""
    seeds: Any = spec.get("seeds", [default])
    seeds = list(range(seeds)) if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise SpecError(f"{where}: seeds must be a count or a list of ints, e.g. seeds: [0, 1, 2]")
    return seeds
