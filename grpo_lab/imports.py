"""Objects named by import path (``package.module:attribute``): how a YAML file names a task, a
reward function or a component of one's own. Imports nothing of grpo_lab, so every layer can use it."""

from __future__ import annotations

import difflib
import importlib
import re
import types
from typing import Any


def is_import_path(name: Any) -> bool:
    """Whether ``name`` is written as an import path (it holds a ':')."""
    return isinstance(name, str) and ":" in name


def resolve_import(path: str, *, what: str, error: type[Exception] = ValueError) -> Any:
    """The object named by ``"package.module:attribute"`` (the attribute may be dotted). A path that is
    malformed, a module that does not import and a missing attribute raise ``error`` with one line
    that names ``what`` was being looked up and how to fix it."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise error(f"{what} {path!r} is not an import path; write it as package.module:name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"{what} {path!r}: cannot import {module_name} ({exc}); put its folder on "
                    "PYTHONPATH or install it") from None
    obj, where = module, module_name
    for part in attr.split("."):
        if not hasattr(obj, part):
            kind = "module" if isinstance(obj, types.ModuleType) else "object"
            raise error(f"{what} {path!r}: {kind} {where} has no {part!r}{did_you_mean(part, dir(obj))}")
        obj, where = getattr(obj, part), f"{where}.{part}"
    return obj


def did_you_mean(name: str, names) -> str:
    """``"; did you mean 'closest'?"`` for the public name in ``names`` closest to ``name``, or ""."""
    close = difflib.get_close_matches(name, [n for n in names if not n.startswith("_")], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def import_paths(value: Any) -> list[str]:
    """Every string in ``value`` (a config as nested dicts and lists) written as an import path."""
    if isinstance(value, dict):
        return [path for item in value.values() for path in import_paths(item)]
    if isinstance(value, (list, tuple)):
        return [path for item in value for path in import_paths(item)]
    return [value] if isinstance(value, str) and IMPORT_PATH.fullmatch(value) else []


def from_the_working_directory(path: str) -> bool:
    """Whether the import path's top-level module is a file or package in the working directory that
    no installed distribution provides: it imports only with the working directory on the path
    (``PYTHONPATH=.``), so commands run later need that too."""
    import importlib.metadata
    import importlib.util
    from pathlib import Path

    top = path.partition(":")[0].split(".")[0]
    if top in importlib.metadata.packages_distributions():
        return False
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        return False
    where = Path(next(iter(spec.submodule_search_locations))) if spec.submodule_search_locations else Path(spec.origin)
    return where.resolve().parent == Path.cwd().resolve()


def pythonpath_prefix(config: Any) -> str:
    """``"PYTHONPATH=. "`` when something ``config`` names by import path comes from the working
    directory (see `from_the_working_directory`), else ""; for the commands a "next:" line shows."""
    return "PYTHONPATH=. " if any(from_the_working_directory(p) for p in import_paths(config)) else ""
