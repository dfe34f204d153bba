"""Registries: one per paradigm axis, name -> component, filled by a decorator.

A component is a class or a function registered under a name, with the config keys it reads
(`reads`, dotted; a key ending in ".*" covers its whole section) and, optionally, a check that
refuses settings it cannot run with. A name in a config may also be an import path
(``my_pkg.rewards:format_ok``): the object it names is used as the component, its `reads`
attribute (if any) declaring its keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from grpo_lab.config import ConfigError
from grpo_lab.imports import resolve_import


class RegistryError(ConfigError):
    """An unknown name or an import path that does not resolve; the message lists what is known."""


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    reads: tuple[str, ...] = ()
    check: Optional[Callable] = None  # check(config) raises ConfigError for settings it cannot run with
    doc: str = ""
    kind: str = ""  # the registry's axis, e.g. "advantage estimator"


def resolve_path(path: str, *, what: str) -> Any:
    """The object named by ``"package.module:attribute"``."""
    return resolve_import(path, what=what, error=RegistryError)


@dataclass
class Registry:
    """Name -> Entry for one axis (`what` names the axis in messages, e.g. "advantage estimator")."""

    what: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def register(self, name: str, *, reads: tuple[str, ...] = (), check: Optional[Callable] = None):
        """Decorator: ``@ADVANTAGES.register("rloo", reads=("advantage.eps",))``."""
        def decorate(obj):
            if name in self.entries:
                raise RegistryError(f"{self.what} {name!r} is registered twice")
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self.entries[name] = Entry(name, obj, tuple(reads), check, doc[0] if doc else "", self.what)
            if not isinstance(obj, (str, int, float, tuple)):  # named by import path, it declares the same
                try:
                    obj.reads = tuple(reads)
                    obj.check = staticmethod(check) if isinstance(obj, type) and check else check
                except AttributeError:  # an object that takes no attributes: only its registered name carries them
                    pass
            return obj
        return decorate

    def get(self, name: str) -> Entry:
        if name in self.entries:
            return self.entries[name]
        if ":" in name:
            obj = resolve_path(name, what=self.what)
            return Entry(name, obj, tuple(getattr(obj, "reads", ())), getattr(obj, "check", None), kind=self.what)
        raise RegistryError(f"unknown {self.what} {name!r}; choose one of {', '.join(self.names())}, "
                            "or name one by import path (package.module:name)")

    def names(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries
