"""What a run's private folder costs per run, by the way it is made and given back:
``python -m bench.rundircost [--runs 3000] [--rounds 2] [--dir PATH]``.

Each way is timed in one thread (``time.thread_time``, µs of that thread's CPU per run) twice:
alone, and while the main thread runs Python (holding the GIL, as the node's busy loop does: each
syscall of the folder's thread then gives the GIL up and waits to take it back). Ways:

- ``mkdir+chmod+rmdir``: what a run did before D423 (the ``chmod`` makes the mode 0700
  whatever the umask);
- ``mkdir+rmdir``: the node's umask is its own 077 (``cronmesh node``): ``mkdir(0o700)`` makes
  0700 already;
- ``reuse``: an emptied folder kept and renamed for the next run: given back, its mode is
  put back to 0700 and it is kept only with no extended attribute (``listxattr``: a default ACL
  would reach the next run's files) and no entry (``os.scandir``).

Folders are made in ``--dir`` (default: a fresh folder under the system's temporary folder;
pass the node's work folder's file system to compare like for like). Prints µs per run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path


def _mkdir_chmod_rmdir(base: str, i: int) -> None:
    path = f"{base}/run-{i}-1"
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)
    os.rmdir(path)


def _mkdir_rmdir(base: str, i: int) -> None:
    path = f"{base}/run-{i}-1"
    os.mkdir(path, 0o700)
    os.rmdir(path)


def _reuse(base: str, i: int) -> None:
    spare = f"{base}/spare"
    path = f"{base}/run-{i}-1"
    os.rename(spare, path)  # given to the run (its owner set as a new folder's would be)
    # given back: the node's mode again (the job owns it and may have opened it to others), no
    # extended attribute (a default ACL would reach the next run's files), no entry
    os.chmod(path, 0o700)
    if os.listxattr(path):
        raise RuntimeError("attributes")
    with os.scandir(path) as it:
        if next(it, None) is not None:
            raise RuntimeError("not empty")
    os.rename(path, spare)


WAYS: list[tuple[str, Callable[[str, int], None]]] = [
    ("mkdir+chmod+rmdir", _mkdir_chmod_rmdir),
    ("mkdir+rmdir", _mkdir_rmdir),
    ("reuse", _reuse),
]


def _timed(way: Callable[[str, int], None], base: str, runs: int, busy: bool) -> float:
    out: list[float] = []
    stop = threading.Event()

    def work() -> None:
        t0 = time.thread_time()
        for i in range(runs):
            way(base, i)
        out.append(time.thread_time() - t0)
        stop.set()

    thread = threading.Thread(target=work)
    thread.start()
    if busy:
        n = 0
        while not stop.is_set():
            n += 1  # Python on the main thread: the GIL is held between switch intervals
    thread.join()
    return out[0] / runs * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rundircost", description=__doc__)
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", type=Path)
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="cronmesh-rundir-", dir=args.dir))
    try:
        os.mkdir(base / "spare", 0o700)
        for r in range(args.rounds):
            for busy in (False, True):
                cells = []
                for name, way in WAYS if r % 2 == 0 else list(reversed(WAYS)):
                    cells.append(f"{name} {_timed(way, str(base), args.runs, busy):.1f}")
                load = os.getloadavg()[0]
                what = "beside a busy thread" if busy else "alone"
                print(f"round {r + 1}, {what} (load {load:.1f}): µs per run: {', '.join(cells)}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
