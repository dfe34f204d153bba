"""Objects named by import path (``package.module:attribute``): how a YAML file names a task, a
reward function or a component of one's own. Imports nothing of grpo_lab, so every layer can use it."""

from __future__ import annotations

import difflib
import importlib
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
