"""A node's run cgroups, reused instead of made and removed per run (docs/architecture.md D340).

Making a run's cgroups (a v2 one, a v1 ``memory`` one, v1 ``pids``/``cpu`` ones when their limits
are asked for) and removing them after the run cost ~470 µs of node CPU per run (D311). A cgroup
whose run is over is **emptied** instead — every process gone (the run's kill and leftover
clean-up, D150, did it; ``RunCgroup.empty`` checks every hierarchy, and that no cgroup was made
below it), the memory its run left charged to it given back to the kernel, at most ``RESIDUE``
bytes left — and kept, up to ``size`` idle ones per node. The next run takes one, gets its own
limits written over the previous run's (``RunCgroup.apply``: only the ones that differ) and its
counters started afresh (``RunCgroup.begin``: the memory peak reset, CPU time and OOM kills read
as differences). A cgroup that is not empty, holds more than ``RESIDUE``, or finds the pool full
is removed as before. Everything here runs in the ``cgroup-io`` threads (thread-safe).

Idle sets are taken newest first, so the ones a node's recent use did not reach sink to the
oldest end; :meth:`trim` (called about once a second, off the runs' path, D487) gives back a few
of those unused for ``IDLE_FOR`` seconds: after a peak the pool shrinks to what the last minute
used at once, and at steady load it keeps that, so the next second's spawns make none again.

Where the kernel cannot reset a v2 ``memory.peak`` (before Linux 6.12) and memory is counted in
v2, a run's peak could include a previous run's: the pool is then off (``size`` 0), every run
gets fresh cgroups as before, and ``reason`` says why.

Only the standard library is used, as in :mod:`nodes.executor.cgroups`.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable

from nodes.executor.cgroups import Layout, RunCgroup, Usage

# idle cgroups kept where no size is given; a node keeps its capacity + max_armed (D464): armed
# processes hold theirs from their spawn, so every second's ends come back at once and the next
# second's spawns take them again
SIZE = 64
RESIDUE = 1 << 20  # bytes an emptied cgroup may still hold (the kernel's per-CPU charge batches)
# an idle set unused this long is given back, at most TRIM a turn (each ~0.5 ms of mostly kernel
# CPU to remove, D311; ~14 kB of kernel memory kept while idle, D464)
IDLE_FOR = 60.0
TRIM = 8


class CgroupPool:
    """The idle run cgroups of one node (at most ``size``), and how runs got theirs."""

    def __init__(
        self, layout: Layout, size: int = SIZE, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.layout = layout
        self.reason = ""
        if size and not _peak_resettable(layout):
            size, self.reason = 0, "memory.peak cannot be reset here (Linux < 6.12)"
        self.size = size if layout.enabled else 0
        self.clock = clock
        self._idle: deque[tuple[RunCgroup, float]] = deque()  # and when kept: oldest first
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        self.reused = 0  # runs that got a cgroup from the pool
        self.made = 0  # runs that got fresh cgroups (the count of names given)
        self.dropped = 0  # ended runs whose cgroups were removed rather than kept
        self.trimmed = 0  # idle cgroups given back unused (D487)

    def acquire(
        self, *, memory: int | None, cpu: float | None, pids: int | None
    ) -> tuple[RunCgroup, list[str]]:
        """A cgroup for one run, with its limits (and those it could not apply). Raises OSError
        when none can be made (the run then cannot be contained)."""
        with self._lock:
            cg = self._idle.pop()[0] if self._idle else None  # the newest: the old ones age
        if cg is not None:
            try:
                missing = cg.apply(memory=memory, cpu=cpu, pids=pids)
                cg.begin()
                with self._lock:
                    self.reused += 1
                return cg, missing
            except OSError:  # removed meanwhile, or a limit refused: fresh cgroups instead
                cg.remove(timeout=0.5)
        with self._lock:
            name = f"cg-{next(self._names)}"
            self.made += 1
        cg = RunCgroup(self.layout, name)
        try:
            missing = cg.create(memory=memory, cpu=cpu, pids=pids)
        except OSError:
            cg.remove(timeout=0.5)
            raise
        return cg, missing

    def release(self, cg: RunCgroup, timeout: float = 0.5) -> tuple[Usage, bool]:
        """The run is over: what it used, and its cgroup kept for another run when it is empty
        (else removed, what is left killed, as before). False when it could not be removed."""
        empty = self.size > 0 and cg.empty()
        usage = cg.usage()  # read once empty: the next run's zero (``begin``)
        cg.end()
        if empty and self._clean(cg):
            with self._lock:
                if len(self._idle) < self.size:
                    self._idle.append((cg, self.clock()))
                    return usage, True
                self.dropped += 1
        else:
            with self._lock:
                self.dropped += 1
        return usage, cg.remove(timeout)

    def _clean(self, cg: RunCgroup) -> bool:
        held = cg.memory_held()
        if held is not None and held > RESIDUE:
            cg.reclaim()
            held = cg.memory_held()
        return held is None or held <= RESIDUE

    def idle(self) -> int:
        return len(self._idle)

    def stale(self, idle_for: float = IDLE_FOR) -> bool:
        """Whether an idle cgroup has gone unused for ``idle_for`` s (cheap: for the loop)."""
        with self._lock:
            return bool(self._idle) and self._idle[0][1] <= self.clock() - idle_for

    def trim(self, idle_for: float = IDLE_FOR, most: int = TRIM) -> int:
        """Give back (remove) up to ``most`` idle cgroups unused for ``idle_for`` s, the oldest
        first; how many. In a ``cgroup-io`` thread: a removal waits for the kernel."""
        cutoff = self.clock() - idle_for
        old: list[RunCgroup] = []
        with self._lock:
            while self._idle and len(old) < most and self._idle[0][1] <= cutoff:
                old.append(self._idle.popleft()[0])
            self.trimmed += len(old)
        for cg in old:
            cg.remove(timeout=0.5)
        return len(old)

    def close(self) -> None:
        """Forget the idle cgroups (the node's subtree is reaped and removed next)."""
        with self._lock:
            idle, self._idle = list(self._idle), deque()
        for cg, _kept in idle:
            cg.remove(timeout=0.5)

    def describe(self) -> dict[str, object]:
        return {
            "size": self.size,
            "idle": len(self._idle),
            "reused": self.reused,
            "made": self.made,
            "dropped": self.dropped,
            "trimmed": self.trimmed,
            "note": self.reason or None,
        }


def _peak_resettable(layout: Layout) -> bool:
    """Whether a run's memory peak can be its own in a reused cgroup: always with v1 (or no
    memory accounting); with v2 only where ``memory.peak`` takes a reset (Linux 6.12+), tried
    once on a cgroup made for the purpose."""
    if layout.limits.get("memory") != "v2" or layout.v2 is None:
        return True
    probe = RunCgroup(layout, "cg-probe")
    try:
        probe.create(memory=None, cpu=None, pids=None)
        probe.begin()
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.remove(timeout=0.5)
