"""The order in which the ``cgroup-io`` threads take a node's work: a run's spawn before anything
else (D478).

The threads are one pool, first come first served. In a same-second burst the runs that started
at the instant end together, and their clean-ups (usage read, cgroup given back, folder emptied:
``launch.finish``) were queued in front of the spawns of the runs waiting for them, which held a
seat each meanwhile: nothing started for 0.2-0.4 s after the first ``capacity`` + ``max_armed``
(docs/benchmarks.md). Work handed over here waits in two lines, spawns first, then the rest, each
in its own order. Each item submits one call to the pool that takes the first item waiting when
a thread runs it, so what the pool runs and in what order it leaves it (at the interpreter's exit
too) is the pool's; only which item a free thread takes changes. Clean-ups are not held back
otherwise: they wait only while spawns are queued, and the spawns a node has in flight are bounded
by ``capacity`` + ``max_armed``."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class IoLine:
    """Two lines of work in front of ``pool``: ``first`` (spawns), then the rest."""

    def __init__(self, pool: Executor) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._first: deque[Item] = deque()
        self._rest: deque[Item] = deque()

    def submit(self, fn: Callable[..., T], *args: Any, first: bool = False) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            (self._first if first else self._rest).append((fut, fn, args))
        self._pool.submit(self._one)  # one call per item: every item is taken once
        return fut

    def waiting(self) -> tuple[int, int]:
        """Items not taken yet: (first, rest)."""
        with self._lock:
            return len(self._first), len(self._rest)

    def _one(self) -> None:
        with self._lock:  # never empty: each item's append comes before its call's submit
            fut, fn, args = (self._first or self._rest).popleft()
        if not fut.set_running_or_notify_cancel():
            return  # cancelled while it waited
        try:
            result = fn(*args)
        except BaseException as exc:  # as the pool's own work items do
            fut.set_exception(exc)
        else:
            fut.set_result(result)


_line: IoLine | None = None
_line_lock = threading.Lock()


def io_line() -> IoLine:
    """The node's line in front of its ``cgroup-io`` threads (one per process, as they are)."""
    global _line
    with _line_lock:
        if _line is None:
            from nodes.executor.cgroups import cgroup_io

            _line = IoLine(cgroup_io())
        return _line
