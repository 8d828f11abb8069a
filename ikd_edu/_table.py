"""The table behind each extension point (distillation terms, datasets): name -> entry, in order.

One implementation of add / remove / "registered inside this block only" for
:mod:`ikd_edu.distill.registry` and :mod:`ikd_edu.data.registry`.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


class Table(dict):
    """``name -> entry`` in registration order; ``kind`` names the entries in error messages."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def add(self, name: str, entry: T) -> T:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = entry
        return entry

    def lookup(self, name: str) -> T:
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self)}") from None

    @contextlib.contextmanager
    def temporarily(self, name: str, entry: T, register: Callable[[T], T]) -> Iterator[T]:
        """``register(entry)`` for the ``with`` block only (tests); removed again even on error."""
        register(entry)
        try:
            yield entry
        finally:
            self.pop(name, None)
