"""A tiny name -> object registry used at the plug-in seams (methods, judges, metrics).

Adding a method, judge or metric means writing one module that registers itself here; nothing
else in the code base changes. Lookups of unknown names list what is registered.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from detoxedit.errors import DetoxeditError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to registered objects of one kind (e.g. "method")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers `obj` under `name`; a name can be registered once."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Returns the entry, or raises an error that lists the registered names."""
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise DetoxeditError(f"unknown {self.kind} {name!r}; registered: {known}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
