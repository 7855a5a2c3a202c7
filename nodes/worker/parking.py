"""Queue entries a worker may not claim now, and until when (D358).

Every worker follows the whole run queue and, on each dispatch, walked every entry: for a run
whose placement leaves this node out (another group, a selector it does not match, a user the
project may not run as here) or that its preferred node has the first ``handoff_delay`` seconds
of, the answer is "not now" every time, and the walk cost a follower 1 ms of CPU per cluster tick
with 1,400 such entries queued (bench.shardbench, docs/benchmarks.md). An entry that got that
answer is parked: left out of the dispatch (a set difference, not a walk) until the cluster
view's version moves (what placement depends on changed), the entry itself changes, or its
hand-off time comes. The claim fallback stays: a run parked behind its preferred node is looked
at again once its hand-off delay has passed (the worker's alarm is set for the earliest such
time), and a dead preferred node changes the view.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, KeysView

ANY = -1  # a parking that no view change ends (the node's own properties or run_as policy)


class Parking:
    """The parked entries: ``key -> monotonic time it ends`` (``inf``: until the view moves or,
    for the keys parked with ``ANY``, until the entry changes). Bounded by the queue: an entry
    leaves with its key, and the heap of end times holds at most one live time per key (a
    stale one goes when its time comes)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._fixed: set[str] = set()  # parked with ANY: no view change ends them
        self._version = ANY  # the view version the other parkings were made at
        self._times: list[tuple[float, str]] = []  # (end, key) of the parkings that end

    def park(self, key: str, version: int, until: float = math.inf) -> None:
        if version == ANY:
            self._fixed.add(key)
            self._until[key] = math.inf
            return
        self._at(version)
        self._until[key] = until
        if until < math.inf:
            heapq.heappush(self._times, (until, key))

    def parked(self, version: int, now: float) -> KeysView[str]:
        """The keys parked at ``version`` and ``now`` (those whose parking ended are dropped)."""
        self._at(version)
        while self._times and self._times[0][0] <= now:
            until, key = heapq.heappop(self._times)
            if self._until.get(key) == until:
                del self._until[key]
        return self._until.keys()

    def next_end(self, now: float) -> float | None:
        """Seconds until the earliest parking with an end time ends (None: there is none)."""
        return max(0.0, self._times[0][0] - now) if self._times else None

    def looks(self, keys: Iterable[str], version: int, now: float) -> list[str]:
        """``keys`` that are not parked, in order."""
        return sorted(set(keys) - self.parked(version, now))

    def _at(self, version: int) -> None:
        if version != self._version:  # the view moved: only the fixed parkings hold
            self._until = dict.fromkeys(self._fixed, math.inf)
            self._times.clear()
            self._version = version

    def drop(self, key: str) -> None:
        self._until.pop(key, None)
        self._fixed.discard(key)

    def clear(self) -> None:
        self._until.clear()
        self._fixed.clear()
        self._times.clear()

    def __len__(self) -> int:
        return len(self._until)
