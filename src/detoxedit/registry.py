"""A tiny name -> object registry used at the plug-in seams (methods, judges, metrics).

Adding a method, judge or metric means writing one module that registers itself here; nothing
else in the code base changes. Lookups of unknown names list what is registered. A name may have
aliases (other spellings users type, such as `ft_l` for `ft-l`); `canonical` gives the one name
that runs and files record.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from detoxedit.errors import DetoxeditError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names (and their aliases) to registered objects of one kind (e.g. "method")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, aliases: Sequence[str] = ()) -> Callable[[T], T]:
        """Decorator that registers `obj` under `name` (and `aliases`); a name can be registered once."""

        def decorator(obj: T) -> T:
            taken = [n for n in (name, *aliases) if n in self]
            if taken:
                raise ValueError(f"{self.kind} {taken[0]!r} is already registered")
            self._entries[name] = obj
            self._aliases.update({alias: name for alias in aliases})
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Removes `name` and its aliases (tests that register throwaway entries clean up with this)."""
        canonical = self.canonical(name)
        del self._entries[canonical]
        self._aliases = {a: n for a, n in self._aliases.items() if n != canonical}

    @contextlib.contextmanager
    def temporarily(self, name: str, obj: T) -> Iterator[T]:
        """Registers `obj` for the duration of the block only (test doubles; never leaks into other tests)."""
        self.register(name)(obj)
        try:
            yield obj
        finally:
            self.unregister(name)

    def canonical(self, name: str) -> str:
        """The registered name for `name` or one of its aliases; raises listing the names if unknown."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        known = ", ".join(sorted(self._entries)) or "(none)"
        raise DetoxeditError(f"unknown {self.kind} {name!r}; registered: {known}")

    def get(self, name: str) -> T:
        """Returns the entry (by name or alias), or raises an error that lists the registered names."""
        return self._entries[self.canonical(name)]

    def aliases(self, name: str) -> list[str]:
        """Every spelling of a registered name: the name itself first, then its aliases."""
        canonical = self.canonical(name)
        return [canonical, *sorted(a for a, n in self._aliases.items() if n == canonical)]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
