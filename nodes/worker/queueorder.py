"""The run queue in claim order, kept as it changes (D462).

A dispatch walks the queued runs in key order (higher priority first, then the oldest,
``Keys.queue_entry``) and stops as soon as the node is full. It used to sort every queued key
(less the parked ones, D358) on each dispatch: ~1 ms with 4,500 runs queued, and in a burst the
worker dispatches every time a process ends, to claim the next run. Now the keys are kept in
order as the watch delivers them (an insertion or a removal in a sorted list: a binary search
and a move of pointers), and a dispatch reads them lazily, from the first, skipping parked keys:
what it reads is what it claims plus what it skips (in flight, parked), not the whole queue.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Container, Iterator, Mapping
from typing import Any


class QueueOrder:
    """Keys in sorted order: every key of the queue the watch has delivered and not deleted (a
    key a claim took out of the candidates already is skipped until its deletion arrives)."""

    def __init__(self) -> None:
        self._keys: list[str] = []

    def add(self, key: str) -> None:
        i = bisect_left(self._keys, key)
        if i == len(self._keys) or self._keys[i] != key:
            self._keys.insert(i, key)

    def remove(self, key: str) -> None:
        i = bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]

    def clear(self) -> None:
        self._keys.clear()

    def looks(self, candidates: Mapping[str, Any], parked: Container[str]) -> Iterator[str]:
        """The keys of ``candidates`` that are not ``parked``, in order, read lazily. Reads a
        copy of the order as it was when the first key is asked for (the walk's own claims
        change neither; nothing is awaited during a dispatch)."""
        for key in tuple(self._keys):
            if key in candidates and key not in parked:
                yield key

    def __len__(self) -> int:
        return len(self._keys)
