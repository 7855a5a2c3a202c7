"""Killing everything in a cgroup, whatever the machine's shape (docs/architecture.md D150):
``cgroup.kill`` on v2, freeze / SIGKILL every member / thaw on v1's freezer; and removing
cgroups that may still hold processes (killed first when the kernel says they are busy).

Only the standard library is used here: the fence process (``nodes.executor.fence``) kills a dead
node's runs through ``nodes.executor.cgroups``, which imports this module."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from typing import Any

from nodes.executor.cgroup_layout import _read, _write


def members_of(path: str) -> list[int]:
    """The processes in one cgroup (not its children); none when it is gone or unreadable."""
    try:
        return [int(x) for x in _read(os.path.join(path, "cgroup.procs")).split()]
    except (OSError, ValueError):
        return []


def kill_v2(path: str) -> None:
    """``cgroup.kill``: the kernel SIGKILLs every process of the cgroup and its descendants,
    new forks included; nothing escapes by ``setsid()`` or a double fork."""
    try:
        _write(os.path.join(path, "cgroup.kill"), "1")
    except OSError as exc:
        # ENOENT: already removed; ENODEV: being removed (e.g. the fence killed and removed it
        # first): either way nothing is left in it to kill.
        if exc.errno not in (errno.ENOENT, errno.ENODEV):
            raise


def _descendants(path: str) -> list[str]:
    out = [path]
    for root, dirs, _files in os.walk(path):
        out.extend(os.path.join(root, d) for d in dirs)
    return out


def kill_frozen(path: str, timeout: float = 1.0) -> None:
    """v1: freeze the cgroup (and its children), SIGKILL every member, thaw: a frozen process
    cannot fork, so none is missed; the signals are delivered at the thaw."""
    state = os.path.join(path, "freezer.state")
    frozen = False
    with contextlib.suppress(OSError):
        _write(state, "FROZEN")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if _read(state).strip() == "FROZEN":
                frozen = True
                break
            time.sleep(0.002)
    for _ in range(3 if not frozen else 1):  # not frozen in time: repeat the sweep
        for cg in _descendants(path):
            for pid in members_of(cg):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        _write(state, "THAWED")


def remove_all(paths: list[str], kill: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    pending = list(paths)
    killed = False
    while True:
        left = []
        for path in pending:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    return False
                left.append(path)
        if not left:
            return True
        if not killed:
            kill()
            killed = True
        if time.monotonic() >= end:
            return False
        pending = left
        time.sleep(0.005)
