"""What switching users costs a spawn (D142): ``python -m bench.spawn_user [--n 300] [--rss 150]``.

Spawns ``/bin/true`` N times in each way and prints the time ``Popen`` blocks the caller
(the node's event loop) and the time to the child's exit, p50/p99 in ms:

- ``as node``: as the node does without ``run_as`` (vfork + exec);
- ``setpriv``: the node's way to switch users (vfork + exec of setpriv, which execs the job);
- ``Popen(user=)``: CPython's own ``user=``/``group=``/``extra_groups=`` (fork, no vfork).

The process first grows to ``--rss`` MiB (touched), as a node's does: fork's cost grows with the
parent's memory, vfork's does not. Needs root and a ``nobody`` user.
"""

from __future__ import annotations

import argparse
import os
import pwd
import statistics
import subprocess
import time

from nodes.runas import Identity, setpriv, switch_prefix


def measure(argv: list[str], n: int, **kw: object) -> tuple[list[float], list[float]]:
    blocked, total = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env={"PATH": "/usr/bin:/bin"},
            **kw,  # type: ignore[call-overload]
        )
        t1 = time.perf_counter()
        p.wait()
        t2 = time.perf_counter()
        blocked.append((t1 - t0) * 1000)
        total.append((t2 - t0) * 1000)
    return blocked, total


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rss", type=int, default=150, help="MiB the process holds, like a node")
    args = ap.parse_args()
    ballast = bytearray(args.rss * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    nobody = pwd.getpwnam("nobody")
    groups = tuple(os.getgrouplist("nobody", nobody.pw_gid))
    who = Identity("nobody", nobody.pw_uid, nobody.pw_gid, nobody.pw_dir, groups)
    prefix = switch_prefix(who, setpriv())
    ways: list[tuple[str, list[str], dict[str, object]]] = [
        ("as node", ["/bin/true"], {}),
        ("setpriv", [*prefix, "/bin/true"], {}),
        (
            "Popen(user=)",
            ["/bin/true"],
            {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []},
        ),
    ]
    print(f"n={args.n} rss={args.rss} MiB pid={os.getpid()}")
    for name, argv, kw in ways:
        measure(argv, 20, **kw)  # warm up
        blocked, total = measure(argv, args.n, **kw)
        print(
            f"{name:14s} blocks the caller p50 {pct(blocked, 50):.2f} p99 {pct(blocked, 99):.2f}"
            f" | to exit p50 {pct(total, 50):.2f} p99 {pct(total, 99):.2f} ms"
        )


if __name__ == "__main__":
    main()
