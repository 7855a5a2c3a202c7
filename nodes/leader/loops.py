"""Loops the leader's parts share."""

from __future__ import annotations

import asyncio
import heapq
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

import structlog

from cluster.errors import LostOwnership, OutcomeUnknown, Unavailable
from cluster.etcd import Compacted
from cluster.waiting import woken

log = structlog.get_logger(__name__)

K = TypeVar("K", bound=Hashable)
COMPACT_SLACK = 1024  # stale entries a DueQueue keeps before it compacts
RETRY = timedelta(seconds=1)  # after an etcd error: decided again from etcd shortly
RETRY_BROKEN = timedelta(seconds=30)  # after anything else (logged with its traceback)


async def periodic(every: float, fn: Callable[[], Awaitable[object]]) -> None:
    """Call ``fn`` every ``every`` seconds while leading; an etcd outage or a compaction is
    logged and waits for the next round, anything else ends the leadership term."""
    while True:
        try:
            await fn()
        except (Unavailable, Compacted) as exc:
            log.warning("periodic leader task failed", task=fn.__name__, error=str(exc))
        await asyncio.sleep(every)


class DueQueue(Generic[K]):
    """Keys due at instants of the injected clock: setting a key's instant again replaces the
    earlier one (each set has a generation; stale heap entries are skipped when popped)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._heap: list[tuple[datetime, int, K]] = []
        self._gen: dict[K, int] = defaultdict(int)
        self._at: dict[K, datetime] = {}  # each key's live instant (the heap also holds stale)
        self._wake = asyncio.Event()

    def set(self, key: K, when: datetime | None, *, wake: bool = True) -> None:
        """``key`` is due at ``when`` (None: not due at all); ``wake``: the waiting loop looks
        again at once (not needed from inside the loop itself)."""
        self._gen[key] += 1
        if when is not None:
            self._at[key] = when
            heapq.heappush(self._heap, (when, self._gen[key], key))
        else:
            self._at.pop(key, None)
        if max(len(self._heap), len(self._gen)) > 2 * len(self._at) + COMPACT_SLACK:
            self._compact()
        if wake:
            self._wake.set()

    def _compact(self) -> None:
        """Drop the stale entries: a key re-set again and again (a waiter looked at on every
        upstream event, its next check a day away each time) left one per set in the heap until
        its instant came, and every key ever set kept its generation."""
        self._heap = [(when, self._gen[key], key) for key, when in self._at.items()]
        heapq.heapify(self._heap)
        self._gen = defaultdict(int, {key: self._gen[key] for key in self._at})

    def at(self, key: K) -> datetime | None:
        """When ``key`` is due (None: not queued)."""
        return self._at.get(key)

    def __len__(self) -> int:
        """The heap's entries, stale ones included (bounded: ``_compact``)."""
        return len(self._heap)

    def pop_due(self, limit: int | None = None) -> list[K]:
        """Every key due by now (at most ``limit``, the earliest), in due order."""
        now = self.clock()
        due: list[K] = []
        while self._heap and self._heap[0][0] <= now and (limit is None or len(due) < limit):
            _, gen, key = heapq.heappop(self._heap)
            if self._gen.get(key) == gen:
                due.append(key)
                self._at.pop(key, None)
        return due

    async def wait(self) -> None:
        """Sleep until the earliest key is due or a key is set (at most an hour)."""
        self._wake.clear()
        delay = 3600.0
        if self._heap:
            delay = max(0.0, (self._heap[0][0] - self.clock()).total_seconds())
        await woken(self._wake, delay)


async def retry_later(
    due: DueQueue[K], key: K, action: Callable[[], Awaitable[object]], what: str
) -> None:
    """Run one due key's ``action``; on failure the key is due again: in ``RETRY`` after an
    etcd error (a lost reply too: the next decision's compare finds it done), in
    ``RETRY_BROKEN`` after anything else. Losing the leadership ends the term."""
    try:
        await action()
    except LostOwnership:
        raise
    except (Unavailable, OutcomeUnknown) as exc:
        log.warning(f"{what}; retrying", key=str(key), error=str(exc))
        due.set(key, due.clock() + RETRY, wake=False)
    except Exception:
        log.exception(f"{what}; retrying in 30 s", key=str(key))
        due.set(key, due.clock() + RETRY_BROKEN, wake=False)
