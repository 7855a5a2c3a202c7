"""What every peer runs for one run: note the start time, then spawn ``sh -c true``.

This is cronmesh's workload (a job whose command is ``true`` is spawned as ``sh -c true``), and
the start time is taken just before the spawn, where cronmesh's worker sets ``started_at``. Runs
in the peers' virtualenv, inside Celery worker processes and APScheduler's threads.

Each process appends ``<name> <unix time>`` lines to ``$PEERS_OUT/starts-<pid>.txt`` (one
``O_APPEND`` write per line, so threads of one process never interleave within a line).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

_lock = threading.Lock()
_fds: dict[int, int] = {}


def _fd() -> int:
    pid = os.getpid()  # a Celery pool process forks after this module is imported
    with _lock:
        fd = _fds.get(pid)
        if fd is None:
            path = os.path.join(os.environ["PEERS_OUT"], f"starts-{pid}.txt")
            fd = _fds[pid] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return fd


def run_true(name: str) -> None:
    started = time.time()
    os.write(_fd(), f"{name} {started:.6f}\n".encode())
    subprocess.run(["sh", "-c", "true"], check=True)
