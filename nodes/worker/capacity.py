"""What bounds the processes a node RUNS (its ``capacity`` and ``weight_budget``), apart from
the runs it holds armed ahead of their instant (``max_armed``, D260).

A run takes a seat just before its command runs (an armed process when it is released at its
instant, any other run just before its spawn) and gives it back when its process has ended. A run
that finds no seat waits in line, first come first served; a seat given back goes to the head of
the line at once, synchronously (an armed process is released in the same callback)."""

from __future__ import annotations

import math
import os
import resource
from collections import deque
from collections.abc import Callable

from cluster.placement import fits
from nodes.executor.cgroup_files import KEPT_FDS


class Seat:
    """One run's place among the node's running runs, held or waited for."""

    __slots__ = ("_capacity", "_then", "cost", "held")

    def __init__(self, capacity: Capacity, cost: int, then: Callable[[], None]) -> None:
        self._capacity: Capacity | None = capacity
        self._then = then
        self.cost = cost
        self.held = False

    def give_back(self) -> None:
        """Leave the line, or free the seat for the next in line (idempotent)."""
        capacity, self._capacity = self._capacity, None
        if capacity is not None:
            capacity._leave(self)


class Capacity:
    def __init__(self, capacity: int, weight_budget: int | None = None) -> None:
        self.capacity = capacity
        self.weight_budget = weight_budget
        self.used = 0  # seats held: processes running (or about to, or just ended)
        self.weight = 0  # their weight
        self._line: deque[Seat] = deque()

    @property
    def waiting(self) -> int:
        return len(self._line)

    def _room(self, cost: int) -> bool:
        if self.used == 0:
            return True  # never stuck: a run heavier than the whole budget runs alone
        return fits(
            running=self.used,
            used_weight=self.weight,
            cost=cost,
            capacity=self.capacity,
            weight_budget=self.weight_budget,
        )

    def take(self, cost: int, then: Callable[[], None]) -> Seat:
        """A seat of ``cost``: ``then`` is called once it is held, before this returns when
        there is room and nobody waits, else when a seat given back reaches it."""
        seat = Seat(self, cost, then)
        if not self._line and self._room(cost):
            self._grant(seat)
        else:
            self._line.append(seat)
        return seat

    def _grant(self, seat: Seat) -> None:
        seat.held = True
        self.used += 1
        self.weight += seat.cost
        seat._then()

    def _leave(self, seat: Seat) -> None:
        if not seat.held:
            try:
                self._line.remove(seat)  # a cancel while in line (rare: O(line) is fine)
            except ValueError:
                pass
            return
        seat.held = False
        self.used -= 1
        self.weight -= seat.cost
        while self._line and self._room(self._line[0].cost):
            self._grant(self._line.popleft())


CAPACITY_PER_CPU = 64  # default concurrent runs per usable CPU (D261)


def default_capacity(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """Concurrent runs a node allows when its config says nothing (D261): 64 per CPU this
    process may use (its affinity, and its cgroup's CPU quota where one is set), at least 16,
    at most 1,024. Most scheduled jobs wait (network, disk, other services) more than they
    compute, and jobs due at the same instant start together only while the capacity covers
    them; a node for heavy jobs sets its capacity."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus or 1, max(1, math.ceil(quota)))
    return max(16, min(1024, CAPACITY_PER_CPU * (cpus or 1)))


def cpu_quota(root: str) -> float | None:
    """CPUs the cgroup quota allows this process (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``);
    None when unlimited or unreadable."""
    try:
        with open(f"{root}/cpu.max") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        try:
            with open(f"{root}/cpu/cpu.cfs_quota_us") as f:
                quota = f.read().strip()
            with open(f"{root}/cpu/cpu.cfs_period_us") as f:
                period = f.read().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


FDS_PER_RUN = 4  # an armed or running process: its stdin, stdout, stderr pipes and its pidfd
FDS_SPARE = 256 + KEPT_FDS  # etcd channels, the API's sockets, log files; cgroup files (D404)


def raise_fd_limit(runs: int) -> tuple[int, int]:
    """Raise this process's soft open-files limit towards its hard one so that ``runs``
    processes (running and armed) fit with room to spare; the limits (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = runs * FDS_PER_RUN + FDS_SPARE
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    return soft, hard


def held_at_once(capacity: int, max_armed: int) -> int:
    """The most runs a node holds a process, a cgroup set and a folder for at once: ``capacity``
    seated or waiting for a seat with their process (D471), ``max_armed`` armed, and up to
    ``capacity`` + ``max_armed`` ended ones whose clean-up waits its turn (D460, D467). The idle
    cgroup sets and spare folders a node keeps (D464, D494), and its open-files limit."""
    return 2 * (capacity + max_armed)
