"""Queue entries a worker may not claim now, and until when (D358).

Every worker follows the whole run queue and, on each dispatch, walked every entry: for a run
whose placement leaves this node out (another group, a selector it does not match, a user the
project may not run as here) or that its preferred node has the first ``handoff_delay`` seconds
of, the answer is "not now" every time, and the walk cost a follower 1 ms of CPU per cluster tick
with 1,400 such entries queued (bench.shardbench, docs/benchmarks.md). An entry that got that
answer is parked: skipped without being looked at until the cluster view's version moves (what
placement depends on changed), the entry itself changes, or its hand-off time comes. The claim
fallback stays: a run parked behind its preferred node is looked at again once its hand-off
delay has passed (the dispatch is kicked then), and a dead preferred node changes the view.
"""

from __future__ import annotations

import math

ANY = -1  # a parking that no view change ends (the node's own properties or run_as policy)


class Parking:
    """``key -> (view version or ANY, monotonic time it ends)``; bounded by the queue (an entry
    leaves with its key)."""

    def __init__(self) -> None:
        self._until: dict[str, tuple[int, float]] = {}

    def park(self, key: str, version: int, until: float = math.inf) -> None:
        self._until[key] = (version, until)

    def left(self, key: str, version: int, now: float) -> float | None:
        """Seconds the entry stays parked (``inf``: until the view moves); None: look at it."""
        got = self._until.get(key)
        if got is None:
            return None
        at, until = got
        if (at != ANY and at != version) or now >= until:
            del self._until[key]
            return None
        return until - now

    def drop(self, key: str) -> None:
        self._until.pop(key, None)

    def clear(self) -> None:
        self._until.clear()

    def __len__(self) -> int:
        return len(self._until)
