"""Registries: name -> component, filled by a decorator. One class serves every kind of thing a
config names: tasks, reward functions and answer extractors (`grpo_lab.tasks`), and each axis of
a method (`grpo_lab.methods`: data sources, learned rewards, reward shaping, refill filters,
advantage estimators, objectives, policy losses, schedules, recipes).

The registry is the one list of the names of its kind: a config's value is checked against it,
`grpo-lab paradigm` and `grpo-lab config` print it, and a component registered by one's own
decorator is accepted wherever a built-in one is. A name may also be an import path
(``my_pkg.components:name``): the object it names is used, with the entry its decorator gave it
(the keys it reads, its check, its traits) where it was decorated.

An entry carries the config keys the component reads (`reads`, dotted; ``"section.*"`` for a
whole section), an optional check that refuses settings it cannot run with, and the traits its
registry declares (what the engine needs to know of it, e.g. whether an advantage estimator
reads rewards alone), each with the registry's default unless registered otherwise.

Imports nothing of grpo_lab but its errors and import paths, so every layer can hold a registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Generic, Iterator, Mapping, Optional, TypeVar

from grpo_lab.errors import GrpoLabError
from grpo_lab.imports import is_import_path, resolve_import

T = TypeVar("T")
ENTRY_ATTRIBUTE = "__grpo_lab_entries__"  # kind -> Entry, on a decorated object


class RegistryError(GrpoLabError, ValueError):
    """An unknown name, an import path that does not resolve, or a name registered twice; the message
    lists what is known and how to name one's own."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component: its name, the object, its kind (the registry's `what`), the config keys
    it reads, its check and its traits."""

    name: str
    obj: T
    kind: str
    reads: tuple[str, ...] = ()
    check: Optional[Callable[[Any], None]] = None  # check(config) raises ConfigError for what it cannot run
    traits: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""

    def trait(self, name: str) -> Any:
        return self.traits[name]


def first_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return doc[0] if doc else ""


class Registry(Generic[T]):
    """Name -> Entry for one kind of component.

    ``what`` names the kind in messages ("advantage estimator"); ``traits`` maps each trait the kind
    has to its default; ``error`` is the exception raised for unknown names (a `RegistryError` unless
    a layer has its own, e.g. `TaskError`)."""

    def __init__(self, what: str, *, traits: Optional[Mapping[str, Any]] = None,
                 error: type[Exception] = RegistryError):
        self.what = what
        self.defaults = MappingProxyType(dict(traits or {}))
        self.error = error
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, reads: tuple[str, ...] = (), check: Optional[Callable] = None,
                 **traits: Any) -> Callable[[T], T]:
        """Decorator: ``@ADVANTAGES.register("rloo", reads=("advantage.eps",), whole_batch=True)``."""
        def decorate(obj: T) -> T:
            self.add(name, obj, reads=reads, check=check, **traits)
            return obj
        return decorate

    def add(self, name: str, obj: T, *, reads: tuple[str, ...] = (), check: Optional[Callable] = None,
            **traits: Any) -> Entry[T]:
        """Register `obj` under `name` (the decorator's work, for objects made without one)."""
        unknown = sorted(set(traits) - set(self.defaults))
        if unknown:
            raise self.error(f"{self.what} {name!r}: unknown trait {unknown[0]!r}; a {self.what} has "
                             f"{', '.join(self.defaults) or 'no traits'}")
        if name in self._entries:
            raise self.error(f"{self.what} {name!r} is registered twice")
        entry = Entry(name, obj, self.what, tuple(reads), check, MappingProxyType({**self.defaults, **traits}),
                      first_line(obj))
        self._entries[name] = entry
        try:  # named by import path, the object brings its entry along
            marks = dict(getattr(obj, ENTRY_ATTRIBUTE, None) or {})
            marks[self.what] = entry
            setattr(obj, ENTRY_ATTRIBUTE, marks)
        except (AttributeError, TypeError):  # an object that takes no attributes: only its name carries the entry
            pass
        return entry

    def get(self, name: str) -> Entry[T]:
        """The entry of a registered name, or of the object an import path names (its own entry where it
        was registered as this kind, else one with this kind's default traits and its `reads` attribute)."""
        if name in self._entries:
            return self._entries[name]
        if is_import_path(name):
            obj = resolve_import(name, what=self.what, error=self.error)
            marked = (getattr(obj, ENTRY_ATTRIBUTE, None) or {}).get(self.what)
            if marked is not None:
                return marked
            return Entry(name, obj, self.what, tuple(getattr(obj, "reads", ())), getattr(obj, "check", None),
                         self.defaults, first_line(obj))
        raise self.error(f"unknown {self.what} {name!r}; choose one of {', '.join(self.names())}, or name one of "
                         "your own by import path (package.module:name)")

    def remove(self, name: str) -> Entry[T]:
        """Take `name` out of the registry (a component registered for a while, as tests do)."""
        return self._entries.pop(name)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def knows(self, name: Any) -> bool:
        """Whether `name` is registered or written as an import path (resolved only by `get`)."""
        return isinstance(name, str) and (name in self._entries or is_import_path(name))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        """The object registered as `name` (a registry reads like the dict of its names)."""
        return self._entries[name].obj

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
