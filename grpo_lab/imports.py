"""Objects named by import path (``package.module:attribute``): how a YAML file names a task, a
reward function or a component of one's own. Imports nothing of grpo_lab, so every layer can use it."""

from __future__ import annotations

import importlib
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
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise error(f"{what} {path!r}: module {module_name} has no {attr!r}") from None
    return obj
