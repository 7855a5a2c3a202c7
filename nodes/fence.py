"""The fence: a small process each node starts, which kills the node's runs when the node cannot.

It reads one pipe from its node (its stdin; the node holds the only write end) and kills every
process of every run of that node (the node's cgroup subtree, or the process sessions it was
told about where there are no cgroups):

- at **end of file**: the node is gone (SIGKILL, OOM killer, crash): its runs die with it, within
  milliseconds (docs/architecture.md D151);
- when the **lease deadline** passes: the node sends ``V <monotonic>`` after every keep-alive
  that succeeded, the instant until which its lease is surely alive (sent + TTL - margin,
  measured from when the keep-alive was *sent*). A node that is frozen (SIGSTOP, a wedged event
  loop, a partition) sends nothing more, and its runs are killed before etcd can expire the lease
  and give the run to another node (self-fencing, D152). ``CLOCK_MONOTONIC`` is one clock for
  every process of a machine.

Protocol (one ASCII line each): ``V <float>`` deadline, ``V -`` no deadline, ``S <pid>`` watch a
session (fallback only), ``E <pid>`` forget it. Only the standard library and
:mod:`nodes.cgroups` are imported, so it starts quickly; it ignores SIGINT/SIGTERM/SIGHUP (it
lives in a session of its own, and stops only at end of file or SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

from nodes.cgroups import Layout, kill_subtree, reap, remove_subtree, session_pids

MAX_LINE = 128
MAX_SESSIONS = 100_000  # far above any node's capacity: a bound, not a limit


def _say(node: str, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"cronmesh fence [{node}]: {message}\n".encode())


def _kill(layout: Layout, sessions: set[int]) -> int:
    if layout.enabled:
        kill_subtree(layout)
    killed = 0
    for sid in list(sessions):
        for pid in session_pids(sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


def serve(layout: Layout, node: str, fd: int = 0) -> int:
    """Run the fence on ``fd`` until end of file; returns the exit status."""
    deadline: float | None = None
    sessions: set[int] = set()
    buf = b""
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            data = os.read(fd, 4096)
            if not data:
                _kill(layout, sessions)
                if layout.enabled:
                    left = reap(layout)
                    if left:
                        _say(node, f"node gone: killed the runs of {len(left)} cgroups")
                    remove_subtree(layout)  # a restarted node makes it again
                return 0
            buf += data
            *lines, buf = buf.split(b"\n")
            if len(buf) > MAX_LINE:
                buf = b""
            for line in lines:
                op, _, arg = line.decode("ascii", "replace").partition(" ")
                try:
                    if op == "V":
                        deadline = None if arg == "-" else float(arg)
                    elif op == "S" and len(sessions) < MAX_SESSIONS:
                        sessions.add(int(arg))
                    elif op == "E":
                        sessions.discard(int(arg))
                except ValueError:
                    _say(node, f"bad line ignored: {line[:MAX_LINE]!r}")
        if deadline is not None and time.monotonic() >= deadline:
            late = time.monotonic() - deadline
            _kill(layout, sessions)
            _say(node, f"lease not renewed in time: killed every run (late by {late:.3f}s)")
            deadline = None


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    layout = Layout.from_json(sys.argv[1])
    return serve(layout, sys.argv[2] if len(sys.argv) > 2 else "?")


if __name__ == "__main__":
    sys.exit(main())
