"""A value computed once per object, for objects that are replaced, never edited (D312, D400).

The leader replaces a job's ``Job`` object when the job changes and never edits one; a parsed
schedule's ``ScheduleSpec`` likewise. What is derived from such an object (its document's size,
its spec snapshot, its fingerprint) is kept by the object's id, with the object itself held so
the id is not reused while the entry lives. Bounded: past ``limit`` entries all are forgotten
at once (computed again on the next use, the same answer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
V = TypeVar("V")

KEPT = 8192


class PerObject(Generic[T, V]):
    """``compute(obj)``, computed once per object."""

    __slots__ = ("_compute", "_kept", "limit")

    def __init__(self, compute: Callable[[T], V], limit: int = KEPT) -> None:
        self._compute = compute
        self._kept: dict[int, tuple[T, V]] = {}
        self.limit = limit

    def __call__(self, obj: T) -> V:
        kept = self._kept.get(id(obj))
        if kept is not None and kept[0] is obj:
            return kept[1]
        value = self._compute(obj)
        if len(self._kept) >= self.limit:
            self._kept.clear()
        self._kept[id(obj)] = (obj, value)
        return value
