"""Configs from YAML files, mappings and `--set key=value` overrides."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from grpo_lab.config.fields import ConfigError
from grpo_lab.config.root import Config


def _unknown_key(key: str, known: list[str]) -> ConfigError:
    from grpo_lab.config.describe import suggest

    close = suggest(key)
    hint = f"; did you mean '{close}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint} (`grpo-lab config` lists every key)")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is not None and type(None) in get_args(tp):  # Optional[X]
        if value is None:
            return None
        tp = next(a for a in get_args(tp) if a is not type(None))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool):
        if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{name} is {value!r}; it must be a{'n' if tp is int else ''} {tp.__name__}")
    return value


def _build(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"section '{prefix.rstrip('.') or 'config'}' must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(prefix + key, [prefix + n for n in names])
        tp = hints[key]
        if is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, prefix + key + ".")
        else:
            kwargs[key] = _coerce(prefix + key, value, tp)
    return cls(**kwargs)


def from_dict(data: dict) -> Config:
    return _build(Config, data or {})


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        if node.get(part) is None:  # a key that may hold a mapping (reward.model) and holds none yet
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not key=value; write e.g. --set optim.lr=1e-4")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Read a YAML config (or start from defaults), apply `key=value` overrides, validate."""
    data: dict = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file (see experiments/)")
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder; pass the path of a YAML file in it (see experiments/)")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save the config as UTF-8 YAML") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path} is not valid YAML{where}; fix the syntax") from None
        if loaded is None:
            raise ConfigError(f"config file {path} is empty; write the sections to change (e.g. `method: grpo`), "
                              "or start from experiments/grpo_chain.yaml")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config sections, not a {type(loaded).__name__}")
        data = merge(data, loaded)
    for key, value in parse_overrides(overrides or []):
        _set_dotted(data, key, value)
    try:
        return from_dict(data)
    except TypeError as exc:  # e.g. a section given a scalar
        raise ConfigError(str(exc)) from None


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def with_overrides(config: Config, **dotted: Any) -> Config:
    """A copy of `config` with dotted keys replaced (`with_overrides(c, **{"optim.lr": 1e-4})`)."""
    data = config.to_dict()
    for key, value in dotted.items():
        _set_dotted(data, key, value)
    return from_dict(data)


