"""A cgroup per run: run cgroups and the node's subtree of them (what the machine allows:
``cgroup_layout``; how a whole tree is killed: ``cgroup_kill``).

Only the standard library is used here and in the modules this one imports: the fence process
(``nodes.executor.fence``) imports this module to kill a dead node's runs, and it must start
quickly and depend on nothing else.

Three shapes are supported (docs/architecture.md D150):

- **v2** with controllers delegated (usual on Kubernetes): one hierarchy; membership, the kill
  (``cgroup.kill``), limits (``memory.max``, ``pids.max``, ``cpu.max``) and accounting
  (``memory.peak``, ``cpu.stat``, ``memory.events``) all there.
- **v2 + v1** (this machine class and CI): a v2 hierarchy without controllers, whose
  ``cgroup.kill`` still kills a whole tree and whose ``cpu.stat`` still counts CPU time, next to
  writable v1 ``memory``, ``pids``, ``cpu`` hierarchies that carry the limits.
- **v1** only: the ``freezer`` hierarchy makes the kill atomic (freeze, SIGKILL every member,
  thaw: a frozen process cannot fork), the other v1 controllers carry limits and accounting.

Elsewhere (no writable hierarchy with a whole-tree kill) the node falls back to killing process
sessions, says so in its log and in ``/status``, and applies no limits.

Every cgroup this node makes lives under one subtree per node, created next to the node's own
cgroup in each hierarchy (never above it, so a container's own limits keep applying to its jobs)
and named by the node id and a hash of its data folder: a restarted node finds (and reaps) the
cgroups its previous incarnation left behind, and two nodes on one machine never touch each
other's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodes.executor.cgroup_files import KeptFiles
from nodes.executor.cgroup_kill import kill_frozen, kill_v2, members_of, remove_all

# detection lives in ``cgroup_layout``; these names are part of this module's interface
from nodes.executor.cgroup_layout import (
    _SAFE,
    LIMITS,
    NONE,
    V1_CONTROLLERS,
    Layout,
    _read,
    _write,
    detect,
    subtree_name,
)
from nodes.executor.cgroup_layout import _mounts as _mounts
from nodes.executor.cgroup_layout import _own as _own

__all__ = [
    "CPU_PERIOD_US",
    "LIMITS",
    "NONE",
    "V1_CONTROLLERS",
    "Layout",
    "RunCgroup",
    "Usage",
    "cgroup_io",
    "detect",
    "kill_subtree",
    "leftover_runs",
    "reap",
    "remove_subtree",
    "session_pids",
    "subtree_name",
]

CPU_PERIOD_US = 100_000


# -------------------------------------------------------------------------------- run cgroups

_io: ThreadPoolExecutor | None = None
_io_lock = threading.Lock()


def cgroup_io() -> ThreadPoolExecutor:
    """The threads that do a node's cgroup writes and reads (creation, moves, usage, removal)
    and its contained spawns (D341): most take tens of microseconds, but a move, a stat flush or
    a spawn's wait for the child's exec may wait for the kernel (and for the GIL the busy loop
    holds) for milliseconds, which the event loop must not. 16 threads: with 4, a node behind at
    400 runs/s queued its spawns 1.5-1.7 s deep (D392)."""
    global _io
    with _io_lock:
        if _io is None:
            _io = ThreadPoolExecutor(max_workers=16, thread_name_prefix="cgroup-io")
        return _io


@dataclass(frozen=True)
class Usage:
    """What a run used, read from its cgroup once its processes are gone."""

    peak_memory: int | None = None  # bytes
    cpu_seconds: float | None = None
    oom_kills: int = 0


def _events(path: str, key: str, read: Any = _read) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in read(path).splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    return 0


class RunCgroup:
    """The cgroups of one attempt, one per hierarchy of the layout.

    Made for one run (``create``) or taken from the node's pool (``nodes.executor.cgroup_pool``,
    D340): ``apply`` writes only the limits that differ from what the cgroup holds, ``begin``
    takes the counters' starting values, so ``usage`` is the run's own."""

    def __init__(self, layout: Layout, name: str) -> None:
        self.layout = layout
        self.name = _SAFE.sub("_", name)
        self.v2 = os.path.join(layout.v2, self.name) if layout.v2 else None
        self.v1 = {c: os.path.join(p, self.name) for c, p in layout.v1.items()}
        self.applied: dict[str, float | None] = {c: None for c in LIMITS}  # as the kernel has them
        self._cpu0 = 0  # cpu.stat usage_usec (or cpuacct.usage ns) when the run began
        self._ooms0 = 0  # oom_kill events when the run began
        self._peak_fd: int | None = None  # v2 memory.peak, reset through this fd (D340)
        self._seen: tuple[int, int] | None = None  # the counters as ``usage`` last read them
        self.files = KeptFiles()  # its control files, open while it lives (D404)

    def paths(self) -> list[str]:
        return [p for p in (self.v2, *self.v1.values()) if p]

    def create(self, *, memory: int | None, cpu: float | None, pids: int | None) -> list[str]:
        """Make the cgroups and apply the limits; returns the limits that could not be applied.
        Raises OSError when a cgroup cannot be made (the run then cannot be contained)."""
        return self.apply(memory=memory, cpu=cpu, pids=pids, make=True)

    def apply(
        self, *, memory: int | None, cpu: float | None, pids: int | None, make: bool = False
    ) -> list[str]:
        """The hierarchies this run needs (v1 pids/cpu only when their limit is asked for: each
        is one more mkdir and move per run; memory always, for the peak, D154), made (``make``:
        every one; else only the missing ones, the unneeded ones removed) and their limits
        written where they differ from what the cgroup holds (``None``: no limit). Returns the
        limits that could not be applied; raises OSError when a cgroup cannot be made."""
        wanted = {"memory": memory, "cpu": cpu, "pids": pids}
        keep = {c: p for c, p in self.layout.v1.items() if c not in ("pids", "cpu") or wanted[c]}
        for ctl in [c for c in self.v1 if c not in keep]:
            shared = self.v1[ctl] in [p for c, p in self.v1.items() if c != ctl]
            if not make and shared and self.applied.get(ctl) is not None:
                self._limit_v1(ctl, None)  # co-mounted (``cpu,cpuacct``): stays, limit lifted
            path = self.v1.pop(ctl)
            if not make and not shared:  # a reused cgroup's: empty (the pool checked)
                self.files.forget(path)
                os.rmdir(path)
            self.applied[ctl] = None
        for ctl in keep:
            if ctl not in self.v1 or make:
                self.v1[ctl] = os.path.join(keep[ctl], self.name)
                os.makedirs(self.v1[ctl], exist_ok=True)
        if make and self.v2 is not None:
            os.makedirs(self.v2, exist_ok=True)
        missing: list[str] = []
        for ctl, value in wanted.items():
            where = self.layout.limits.get(ctl)
            if value == self.applied.get(ctl):
                continue
            try:
                if where == "v2" and self.v2 is not None:
                    self._limit_v2(ctl, value)
                elif where == "v1" and ctl in self.v1:
                    self._limit_v1(ctl, value)
                elif value is not None:
                    missing.append(ctl)
                    continue
                self.applied[ctl] = value
            except OSError:
                if not make:  # a reused cgroup may hold the last run's limit: not this run's
                    raise
                if value is not None:
                    missing.append(ctl)
        return missing

    def _limit_v2(self, ctl: str, value: float | None) -> None:
        assert self.v2 is not None
        if ctl == "memory":
            _write(os.path.join(self.v2, "memory.max"), "max" if value is None else str(int(value)))
            swap = os.path.join(self.v2, "memory.swap.max")
            if _exists(swap):  # the limit is on memory, not memory + swap
                _write(swap, "max" if value is None else "0")
        elif ctl == "pids":
            _write(os.path.join(self.v2, "pids.max"), "max" if value is None else str(int(value)))
        else:
            quota = "max" if value is None else str(_quota(value))
            _write(os.path.join(self.v2, "cpu.max"), f"{quota} {CPU_PERIOD_US}")

    def _limit_v1(self, ctl: str, value: float | None) -> None:
        base = self.v1[ctl]
        if ctl == "memory":
            limit = os.path.join(base, "memory.limit_in_bytes")
            memsw = os.path.join(base, "memory.memsw.limit_in_bytes")
            text = "-1" if value is None else str(int(value))
            old = self.applied.get("memory")
            # the kernel keeps limit <= memsw limit: raise memsw first, lower it last
            raising = value is None or (old is not None and value > old)
            order = [memsw, limit] if raising else [limit, memsw]
            for path in order:
                if path is limit or _exists(memsw):
                    _write(path, text)
        elif ctl == "pids":
            _write(os.path.join(base, "pids.max"), "max" if value is None else str(int(value)))
        else:
            _write(os.path.join(base, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
            quota = "-1" if value is None else str(_quota(value))
            _write(os.path.join(base, "cpu.cfs_quota_us"), quota)

    def add(self, pid: int) -> None:
        """Move ``pid`` into every cgroup of the run (the kill domain first)."""
        for path in self.paths():
            self.files.write(os.path.join(path, "cgroup.procs"), str(pid))

    def members(self) -> list[int]:
        """Live processes of the run (from the cgroup the kill uses)."""
        path = self.v2 or self.v1.get("freezer")
        return members_of(path) if path else []

    def signal(self, sig: int) -> None:
        if sig == signal.SIGKILL:
            self.kill()
            return
        for pid in self.members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self) -> None:
        """SIGKILL every process of the run at once, including those that left its session."""
        if self.v2 is not None:
            kill_v2(self.v2)
        elif "freezer" in self.v1:
            kill_frozen(self.v1["freezer"])

    def _counters(self) -> tuple[int, int]:
        """CPU time (v2 µs or v1 ns) and OOM kills counted so far: never reset by the kernel."""
        if self.layout.limits.get("memory") == "v2" and self.v2 is not None:
            ooms = _events(os.path.join(self.v2, "memory.events"), "oom_kill", self.files.read)
        elif "memory" in self.v1:
            path = os.path.join(self.v1["memory"], "memory.oom_control")
            ooms = _events(path, "oom_kill", self.files.read)
        else:
            ooms = 0
        if self.v2 is not None:
            cpu = _events(os.path.join(self.v2, "cpu.stat"), "usage_usec", self.files.read)
        elif "cpuacct" in self.v1:
            cpu = _int_file(os.path.join(self.v1["cpuacct"], "cpuacct.usage")) or 0
        else:
            cpu = 0
        return cpu, ooms

    def begin(self) -> None:
        """A reused cgroup (empty, D340) starts a run: its memory peak is reset to what it holds
        now (v1: a write to ``memory.max_usage_in_bytes``; v2: a write to ``memory.peak``, which
        resets it for reads through the same file descriptor — Linux 6.12 and later; raises
        OSError before) and its CPU and OOM counters are taken as the run's zero."""
        # an empty cgroup's counters do not move: the ones read at the last run's end will do
        self._cpu0, self._ooms0 = self._seen if self._seen is not None else self._counters()
        self._seen = None
        if self.layout.limits.get("memory") == "v2" and self.v2 is not None:
            self.end()
            fd = os.open(os.path.join(self.v2, "memory.peak"), os.O_RDWR | os.O_CLOEXEC)
            try:
                os.write(fd, b"reset\n")
            except OSError:
                os.close(fd)
                raise
            self._peak_fd = fd
        elif "memory" in self.v1:
            self.files.write(os.path.join(self.v1["memory"], "memory.max_usage_in_bytes"), "0")

    def end(self) -> None:
        """Close what ``begin`` opened (the cgroup goes back to the pool, or away)."""
        fd, self._peak_fd = self._peak_fd, None
        if fd is not None:
            os.close(fd)

    def usage(self) -> Usage:
        """What the run used: its memory peak, its CPU time and OOM kills since it began."""
        peak: int | None = None
        cpu: float | None = None
        if self.layout.limits.get("memory") == "v2" and self.v2 is not None:
            if self._peak_fd is not None:
                with contextlib.suppress(OSError, ValueError):
                    peak = int(os.pread(self._peak_fd, 64, 0).split()[0])
            else:
                peak = _int_file(os.path.join(self.v2, "memory.peak"))
        elif "memory" in self.v1:
            path = os.path.join(self.v1["memory"], "memory.max_usage_in_bytes")
            peak = _int_file(path, self.files.read)
        used, ooms = self._seen = self._counters()
        if self.v2 is not None:
            cpu = max(0, used - self._cpu0) / 1e6
        elif "cpuacct" in self.v1:
            cpu = max(0, used - self._cpu0) / 1e9
        return Usage(peak_memory=peak, cpu_seconds=cpu, oom_kills=max(0, ooms - self._ooms0))

    def memory_held(self) -> int | None:
        """Bytes still charged to the (empty) cgroup: page cache and kernel memory its runs
        left; None when nothing counts memory here."""
        if self.layout.limits.get("memory") == "v2" and self.v2 is not None:
            return _int_file(os.path.join(self.v2, "memory.current"), self.files.read)
        if "memory" in self.v1:
            path = os.path.join(self.v1["memory"], "memory.usage_in_bytes")
            return _int_file(path, self.files.read)
        return None

    def reclaim(self) -> None:
        """Ask the kernel to give back what the (empty) cgroup holds (v1 ``memory.force_empty``,
        v2 ``memory.reclaim``); best effort."""
        with contextlib.suppress(OSError):
            if self.layout.limits.get("memory") == "v2" and self.v2 is not None:
                _write(os.path.join(self.v2, "memory.reclaim"), str(1 << 40))
            elif "memory" in self.v1:
                _write(os.path.join(self.v1["memory"], "memory.force_empty"), "0")

    def empty(self) -> bool:
        """No process in any of the run's cgroups and no cgroup below them (a job running as
        root could make one): the only state in which a cgroup may serve another run."""
        for path in self.paths():
            try:
                procs = _read(os.path.join(path, "cgroup.procs"))
                if os.stat(path).st_nlink != 2 or procs:
                    return False
            except OSError:
                return False
        return True

    def remove(self, timeout: float = 1.0) -> bool:
        """Remove the run's cgroups, killing what is left in them; False if some remain."""
        self.end()
        self.files.close()
        return remove_all(self.paths(), self.kill, timeout)


def _quota(cpu: float) -> int:
    return max(1000, round(cpu * CPU_PERIOD_US))


_EXISTS: dict[str, bool] = {}


def _exists(path: str) -> bool:
    """Whether a cgroup control file exists. The answer is the kernel's (swap accounting, a
    controller's version), the same for every cgroup of a hierarchy: asked once per file name."""
    name = os.path.basename(path)
    found = _EXISTS.get(name)
    if found is None:
        found = _EXISTS[name] = os.path.exists(path)
    return found


def _int_file(path: str, read: Any = _read) -> int | None:
    try:
        return int(read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ----------------------------------------------------------------------- the node's subtree


def kill_subtree(layout: Layout) -> None:
    """SIGKILL every process of every run of this node (the node itself is not in there)."""
    if layout.v2 is not None:
        kill_v2(layout.v2)
    elif "freezer" in layout.v1:
        kill_frozen(layout.v1["freezer"])


def leftover_runs(layout: Layout) -> list[str]:
    """Run cgroups found in the node's subtree (left by a previous incarnation, or not removed)."""
    names: set[str] = set()
    for base in layout.subtrees():
        with contextlib.suppress(OSError):
            names.update(e.name for e in os.scandir(base) if e.is_dir())
    return sorted(names)


def reap(layout: Layout, timeout: float = 2.0) -> list[str]:
    """Kill the processes of every run cgroup of this node and remove those cgroups; returns
    the names of the runs that were still there. Used at start-up and by the fence."""
    names = leftover_runs(layout)
    if not names:
        return []
    kill_subtree(layout)
    for name in names:
        RunCgroup(layout, name).remove(timeout)
    return names


def remove_subtree(layout: Layout) -> None:
    """Remove the node's (empty) subtree on a clean stop."""
    for base in layout.subtrees():
        with contextlib.suppress(OSError):
            os.rmdir(base)


def session_pids(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (fallback kill without cgroups)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3 and fields[3] == str(sid):
            out.append(int(entry.name))
    return out
