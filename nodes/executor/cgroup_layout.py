"""What this machine allows: the cgroup layout a node's runs get (``detect`` → ``Layout``).

Only the standard library is used here, as in :mod:`nodes.executor.cgroups` (the fence process
imports both). The three shapes and where a node's subtree lives are described there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")
LIMITS = ("memory", "pids", "cpu")
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass(frozen=True)
class Layout:
    """Where this node's cgroups live and what they can do (``mode`` ``none``: nothing)."""

    mode: str  # "v2" | "v2+v1" | "v1" | "none"
    kill: str | None = None  # "cgroup.kill" | "freezer" | None
    v2: str | None = None  # the node's subtree in the unified hierarchy
    v1: dict[str, str] = field(default_factory=dict)  # v1 controller -> the node's subtree
    limits: dict[str, str] = field(default_factory=dict)  # memory/pids/cpu -> "v2" | "v1"
    reason: str = ""  # why a part is missing (shown in /status and the start-up log)

    @property
    def enabled(self) -> bool:
        return self.kill is not None

    def subtrees(self) -> list[str]:
        return [p for p in (self.v2, *self.v1.values()) if p]

    def describe(self) -> dict[str, Any]:
        """What ``/status`` shows."""
        return {
            "mode": self.mode,
            "kill": self.kill or "process-session",
            "limits": dict(self.limits),
            "subtree": self.v2 or self.v1.get("freezer"),
            "note": self.reason,
        }

    def to_json(self) -> str:
        return json.dumps(
            {"mode": self.mode, "kill": self.kill, "v2": self.v2, "v1": self.v1}, sort_keys=True
        )

    @classmethod
    def from_json(cls, text: str) -> Layout:
        data = json.loads(text)
        return cls(mode=data["mode"], kill=data["kill"], v2=data["v2"], v1=dict(data["v1"]))


NONE = Layout(mode="none", reason="cgroups disabled")


def subtree_name(node_id: str, data_dir: str) -> str:
    digest = hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:8]
    return f"cronmesh.{_SAFE.sub('_', node_id)[:64]}.{digest}"


def _mounts(text: str) -> tuple[str | None, dict[str, str]]:
    """The unified mount point and the v1 mount point of each controller, from /proc/mounts."""
    unified: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        point, kind, options = parts[1], parts[2], parts[3].split(",")
        if kind == "cgroup2" and unified is None:
            unified = point
        elif kind == "cgroup":
            for name in V1_CONTROLLERS:
                if name in options and name not in v1:
                    v1[name] = point
    return unified, v1


def _own(text: str) -> tuple[str | None, dict[str, str]]:
    """This process's cgroup path in the unified hierarchy and in each v1 one."""
    unified: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            unified = parts[2]
        else:
            for name in parts[1].split(","):
                if name in V1_CONTROLLERS:
                    v1[name] = parts[2]
    return unified, v1


def _join(mount: str, path: str, name: str) -> str:
    return os.path.join(mount, path.lstrip("/"), name)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    """A control file's text: plain ``os`` calls (``open()`` builds a buffered text reader, ~6 µs
    more per read, and a run's clean-up reads several, D341)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii")


def _try_mkdir(path: str) -> str | None:
    """Create a cgroup directory; None when this hierarchy is not writable here."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.path.exists(os.path.join(path, "cgroup.procs")) else None


def _delegate_v2(parent: str, subtree: str) -> tuple[set[str], str]:
    """Enable memory/pids/cpu for the node's subtree and its runs: what worked, why not."""
    try:
        available = set(_read(os.path.join(parent, "cgroup.controllers")).split())
    except OSError:
        return set(), "v2: cannot read cgroup.controllers"
    wanted = [c for c in LIMITS if c in available]
    if not wanted:
        return set(), "v2 has no memory/pids/cpu controllers here"
    enable = " ".join(f"+{c}" for c in wanted)
    try:
        _write(os.path.join(parent, "cgroup.subtree_control"), enable)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            return set(), f"v2 controllers not delegated: {exc.strerror}"
        # "No internal processes": the node shares its cgroup with its processes. Move this
        # process into a leaf of its own (as a container's init would be) and try again.
        leaf = os.path.join(parent, "cronmesh-node")
        try:
            os.makedirs(leaf, exist_ok=True)
            _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
            _write(os.path.join(parent, "cgroup.subtree_control"), enable)
        except OSError as exc2:
            return set(), f"v2 controllers not delegated (other processes share it): {exc2}"
    try:
        _write(os.path.join(subtree, "cgroup.subtree_control"), enable)
    except OSError as exc:
        return set(), f"v2 controllers not delegated to the subtree: {exc.strerror}"
    return set(wanted), ""


def detect(
    node_id: str,
    data_dir: str,
    *,
    mounts: str | None = None,
    own: str | None = None,
    want_v2: bool = True,
    want_v1: bool = True,
) -> Layout:
    """Find what this node can do with cgroups and create its subtree in each usable hierarchy.

    ``mounts`` and ``own`` are the texts of /proc/self/mounts and /proc/self/cgroup (tests pass
    their own). Never raises: a hierarchy that cannot be used is left out, with the reason.
    """
    try:
        mounts = mounts if mounts is not None else _read("/proc/self/mounts")
        own = own if own is not None else _read("/proc/self/cgroup")
    except OSError as exc:
        return Layout(mode="none", reason=f"cannot read the cgroup setup: {exc}")
    name = subtree_name(node_id, data_dir)
    unified_mount, v1_mounts = _mounts(mounts)
    unified_own, v1_own = _own(own)
    notes: list[str] = []
    v2: str | None = None
    v2_limits: set[str] = set()
    if want_v2 and unified_mount and unified_own is not None:
        parent = _join(unified_mount, unified_own, "")
        v2 = _try_mkdir(os.path.join(parent, name))
        if v2 is not None and not os.path.exists(os.path.join(v2, "cgroup.kill")):
            notes.append("v2 without cgroup.kill (kernel older than 5.14)")
            with contextlib.suppress(OSError):
                os.rmdir(v2)
            v2 = None
        if v2 is not None:
            v2_limits, why = _delegate_v2(parent.rstrip("/"), v2)
            if why:
                notes.append(why)
        elif not notes:
            notes.append("the v2 hierarchy is not writable")
    v1: dict[str, str] = {}
    if want_v1:
        for ctl in V1_CONTROLLERS:
            if ctl in v1_mounts and ctl in v1_own:
                made = _try_mkdir(_join(v1_mounts[ctl], v1_own[ctl], name))
                if made is not None:
                    v1[ctl] = made
    limits = {c: "v2" for c in sorted(v2_limits)}
    for ctl in LIMITS:
        if ctl not in limits and ctl in v1:
            limits[ctl] = "v1"
    if v2 is not None:
        kill = "cgroup.kill"
        mode = "v2+v1" if "v1" in limits.values() else "v2"
        # v2 counts CPU time and kills; v1 hierarchies serve only the limits v2 cannot carry.
        for ctl in [c for c in v1 if limits.get(c) != "v1"]:
            with contextlib.suppress(OSError):
                os.rmdir(v1.pop(ctl))
    elif "freezer" in v1:
        mode, kill = "v1", "freezer"
    else:
        for path in v1.values():
            with contextlib.suppress(OSError):
                os.rmdir(path)
        why = "; ".join(notes) or "no writable cgroup hierarchy with a whole-tree kill"
        return Layout(mode="none", reason=f"{why}: process-session kill, no resource limits")
    missing = [c for c in LIMITS if c not in limits]
    if missing:
        notes.append(f"limits not available here: {', '.join(missing)}")
    return Layout(mode=mode, kill=kill, v2=v2, v1=v1, limits=limits, reason="; ".join(notes))
