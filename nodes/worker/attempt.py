"""A local attempt of a run (`Execution`: its process, log writer, requested action) and the
timers the worker arms for it (`Releases`, `Alarm`)."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cluster.etcd import Op
from cluster.models import Run
from nodes.executor.cgroups import Usage
from nodes.executor.process import Process
from nodes.worker.capacity import Seat

MAX_RESULT = 64 * 1024
ORPHAN_CHECK_EVERY = 5.0
EXECUTED_KEPT = 4096  # attempts remembered as run here, so the orphan check never reruns one
# A run due at a known instant (``not_before``: materialised ahead by the leader, or a retry's
# backoff) is claimed this long before it, so the claim's round trip is over by then and the
# process starts on a local timer at the instant itself. Short on purpose: a node that dies
# holding a claimed run that has not started yet loses it like a running one (D120).
CLAIM_AHEAD = 0.75
# Processes armed ahead of their instant at once, by default (D260): apart from ``capacity``, which
# bounds what runs. 500 runs/s of whole-second jobs hold ~500 armed; each costs the node 4 fds.
MAX_ARMED = 512
# A completion may wait up to this long for others to share its etcd transaction (D353): a write
# transaction costs etcd ~0.6 ms and more, and exits after a busy second trickle in one by one.
# On again since the short windows seen at load 5-17 were explained without it (D383).
COMPLETION_LINGER = 0.02
IDENTITY_TTL = 30.0  # s a resolved run_as user (uid, gid, home) is reused before a new lookup


@dataclass
class Execution:
    run: Run
    claim_revision: int
    slot: str | None
    proc: Process | None = None
    # "cancel" | "abort" | "shutdown" | "timeout" | "interrupt" (a second Ctrl-C on the node)
    requested: str | None = None
    acted: bool = False  # the request reached a live process (else the exit status decides)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # a request while waiting to start
    cost: int = 1  # units of the node's weight budget this run holds
    seat: Seat | None = None  # its place among the node's running runs (D260), held or awaited
    budget_slots: tuple[str, ...] = ()  # budget slot keys it holds, deleted at completion (D275)
    output_bytes: int | None = None  # what the job wrote, once its log is closed
    logged: bool = True  # False: nothing at all was written, so no log object will exist
    log_url: str | None = None  # its log's place in a pack (D440); None: an object of its own
    folder_gone: bool = False  # its folder went with its cgroup, off the loop (D310)
    usage: Usage | None = None  # what the run's cgroup counted (None: no cgroup)
    reason: str | None = None  # "oom_killed" (out-of-memory killer), "interrupted" (D245)
    phase: str = "starting"  # where it is (STATES); counted by the metric at scrape time only
    _stopper: asyncio.Task[None] | None = None

    @property
    def slots(self) -> list[str]:
        """The slot keys its completion deletes: its job's, its budgets' (D275)."""
        return [*([self.slot] if self.slot else []), *self.budget_slots]

    def fenced_releases(self) -> list[Any]:
        """The completion's failure branch (its claim was taken): the slots this attempt's claim
        created, deleted while they are still those (same create revision), instead of held
        until the node's lease ends (D319)."""
        return [Op.delete_if_created(slot, self.claim_revision) for slot in self.slots]

    def request(self, action: str) -> None:
        """Record a cancel/abort/shutdown; act on the process now, or as soon as it exists."""
        if self.requested is not None and action not in ("abort", "interrupt"):
            return
        if self.requested in ("abort", "timeout") and action == "interrupt":
            return  # already being killed, with its own outcome
        self.requested = action
        self.wake.set()
        self.act()

    def act(self) -> None:
        if self.proc is None or self.requested is None or self.proc.returncode_ready:
            return
        self.acted = True
        if self.requested in ("abort", "interrupt"):
            self.proc.kill()
        elif self._stopper is None:
            grace = self.run.snapshot.kill_grace
            self._stopper = asyncio.get_running_loop().create_task(self.proc.stop(grace))


STATES = ("starting", "armed", "seat", "spawning", "running", "exited", "cleanup", "completing")


def states(running: Iterable[Execution]) -> Counter[str]:
    """How many executions are in each state (the ``cronmesh_executions`` gauge, counted at
    scrape time): ``starting`` (claimed, its process not asked for yet), ``spawning`` (its folder,
    cgroup and process being made, D341), ``armed`` (held for its instant), ``seat`` (due, in line
    for a seat), ``running``, ``exited`` (its process ended, the tree's leftovers and output being
    settled), ``cleanup`` (its cgroup and folder given back, D340), ``completing`` (its
    completion's transaction, D137, D353)."""
    counts: Counter[str] = Counter()
    for ex in running:
        phase = ex.phase
        if phase == "armed" and ex.seat is not None:
            phase = "running" if ex.seat.held else "seat"
        elif phase == "running" and ex.proc is not None and ex.proc.returncode_ready:
            phase = "exited"
        counts[phase] += 1
    return counts


class Due:
    """A callback waiting in :class:`Releases` for its instant."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Releases:
    """Armed processes due at the same instant, released together by one timer callback: at the
    instant the loop calls each one's callback (one write per process, or a place in line for a
    seat, D260) before any of their coroutines resumes (100 runs due together are all released
    within about a millisecond)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._due: dict[datetime, list[Due]] = {}

    def add(self, when: datetime, callback: Callable[[], None]) -> Due:
        """Call ``callback`` at ``when`` (never before); cancel the result to withdraw it."""
        entry = Due(callback)
        batch = self._due.get(when)
        if batch is None:
            batch = self._due[when] = []
            delay = (when - self._clock()).total_seconds()
            asyncio.get_running_loop().call_later(max(0.0, delay), self._release, when)
        batch.append(entry)
        return entry

    def _release(self, when: datetime) -> None:
        early = (when - self._clock()).total_seconds()
        if early > 0:  # loop timers may fire a hair early (uvloop's cached time): never start early
            asyncio.get_running_loop().call_later(early, self._release, when)
            return
        for entry in self._due.pop(when, []):
            if not entry.cancelled:
                entry.callback()


class Alarm:
    """One pending call of ``callback`` at a loop time; asking for an earlier time moves it, a
    later one is ignored. Keeps the deadline itself: uvloop answers ``call_later(0)`` with a
    plain ``Handle``, which has no ``when()``."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.Handle | None = None
        self._when = math.inf

    @property
    def when(self) -> float:
        return self._when

    def at(self, when: float) -> None:
        if self._handle is not None:
            if self._when <= when:
                return
            self._handle.cancel()
        loop = asyncio.get_running_loop()
        self._when = when
        self._handle = loop.call_later(max(0.0, when - loop.time()), self._fire)

    def _fire(self) -> None:
        self._handle, self._when = None, math.inf
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._when = None, math.inf
