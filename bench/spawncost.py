"""What a spawner helper could save: ``python -m bench.spawncost [--runs 500] [--rss-mib 150]``.

Measures this process's CPU (user + kernel, ``os.times()``) per spawn → exit → reap of
``/bin/sh -c true``, one after the other, with its output on pipes, three ways:

- ``popen``: ``subprocess.Popen`` as the node does (new session, ``close_fds``, stdin/stdout/
  stderr pipes, ``vfork`` + ``exec``), reaped with ``wait``;
- ``posix_spawn``: ``os.posix_spawn`` with ``setsid`` and the pipes as file actions, reaped with
  ``waitpid`` — the least a spawner written in Python can do per run;
- ``posix_spawn (small)``: the same in a child process of ~10 MiB (a helper's address space),
  reported by that child.

``--rss-mib`` first makes this process as large as a busy node (a touched buffer), since the
kernel's share of a spawn grows with the parent's page tables when it forks (``vfork`` should not).
The numbers are the design input for a spawner helper (docs/benchmarks.md, D342).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ENV = {"PATH": "/usr/bin:/bin"}
ARGV = ["/bin/sh", "-c", "true"]


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _popen(runs: int) -> float:
    t = _cpu()
    for _ in range(runs):
        p = subprocess.Popen(
            ARGV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            env=ENV,
            cwd="/tmp",
        )
        for f in (p.stdin, p.stdout, p.stderr):
            assert f is not None
            f.close()
        p.wait()
    return (_cpu() - t) / runs * 1000


def _posix_spawn(runs: int) -> float:
    t = _cpu()
    for _ in range(runs):
        fds = [os.pipe() for _ in range(3)]
        actions = [
            (os.POSIX_SPAWN_DUP2, fds[0][0], 0),
            (os.POSIX_SPAWN_DUP2, fds[1][1], 1),
            (os.POSIX_SPAWN_DUP2, fds[2][1], 2),
        ]
        pid = os.posix_spawn(ARGV[0], ARGV, ENV, file_actions=actions, setsid=True)
        for r, w in fds:
            os.close(r)
            os.close(w)
        os.waitpid(pid, 0)
    return (_cpu() - t) / runs * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--rss-mib", type=int, default=150)
    p.add_argument("--small", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.small:
        _posix_spawn(20)
        print(_posix_spawn(args.runs))
        return
    ballast = bytearray(args.rss_mib << 20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched: page tables as a busy node's
    out = {"runs": args.runs, "rss_mib": args.rss_mib, "load": os.getloadavg()[0]}
    _popen(20)
    out["popen_ms"] = round(_popen(args.runs), 3)
    _posix_spawn(20)
    out["posix_spawn_ms"] = round(_posix_spawn(args.runs), 3)
    small = subprocess.run(
        [sys.executable, "-m", "bench.spawncost", "--small", "--runs", str(args.runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    out["posix_spawn_small_ms"] = round(float(small.stdout.strip()), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
