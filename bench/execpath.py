"""The executor's cost per run, cgroup and folder included: ``python -m bench.execpath``.

Runs ``/bin/sh -c true`` the way the worker does, ``--concurrency`` at a time on one event loop,
each run: its folder and cgroup made (with limits), the process spawned armed, moved into the
cgroup, released, waited for, its usage read, its cgroup removed (or given back to the pool), its
result file read and its folder removed. Ways (``--ways``, comma-separated):

- ``session``: no cgroup (``cgroups: off``): folder on the loop, the process in its session,
  leftovers found by the ``/proc`` scan — the floor the cgroup paths are compared with;
- ``fresh``: a cgroup made and removed per run, three hand-offs to the cgroup threads (folder +
  cgroup; move; usage + removal + result) — the path before D340/D341;
- ``pooled3``: cgroups from the pool (D340), still three hand-offs (D340 alone);
- ``pooled``: what the worker does now (``nodes.executor.launch``): cgroups reused from the
  node's pool (D340) and two hand-offs (folder + cgroup + spawn + move; usage + release +
  result, D341).

Prints, per way, this process's CPU per run (all threads, user and kernel, from ``os.times()``),
the ``cgroup-io`` threads' CPU per run alone (``cgroup_io_ms``, from ``/proc/self/task``), the
wall time per run, and the load average beside it; ``--busy`` runs Python on another thread
meanwhile, holding the GIL as the node's loop does (the machine is shared: compare ways
measured in the same run). ``--rounds`` alternates the ways to spread the machine's drift.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from nodes.executor import cgroups, workdir
from nodes.executor.cgroups import Layout, RunCgroup, cgroup_io
from nodes.executor.process import Process

ENV = {"PATH": "/usr/bin:/bin"}
LIMITS: dict[str, Any] = {"memory": 256 << 20, "cpu": None, "pids": None}


def _prepare(cg: RunCgroup, folder: Path) -> None:
    workdir.make_run_dir(folder, None, None)
    cg.create(**LIMITS)


def _finish(cg: RunCgroup, folder: Path) -> None:
    cg.usage()
    if cg.remove(timeout=0.5):
        workdir.read_result(folder / workdir.RESULT_NAME, 65536)
        os.rmdir(folder)


async def _session(work: Path, i: int) -> None:
    folder = workdir.run_dir(work, f"b{i}", 1)
    workdir.make_run_dir(folder, None, None)
    proc = await Process.start(
        ["/bin/sh", "-c", "true"], env=ENV, cwd=str(folder), on_output=lambda s, d: None
    )
    await proc.wait()
    workdir.read_result(folder / workdir.RESULT_NAME, 65536)
    os.rmdir(folder)


async def _fresh(layout: Layout, work: Path, i: int) -> None:
    loop = asyncio.get_running_loop()
    folder = workdir.run_dir(work, f"b{i}", 1)
    cg = RunCgroup(layout, f"run-b{i}-1")
    await loop.run_in_executor(cgroup_io(), _prepare, cg, folder)
    proc = await Process.start(
        ["/bin/sh", "-c", "true"], env=ENV, cwd=str(folder), on_output=lambda s, d: None, cgroup=cg
    )
    await proc.wait()
    await loop.run_in_executor(cgroup_io(), _finish, cg, folder)


def _acquire(pool: Any, folder: Path) -> RunCgroup:
    workdir.make_run_dir(folder, None, None)
    cg: RunCgroup = pool.acquire(**LIMITS)[0]
    return cg


def _release(pool: Any, cg: RunCgroup, folder: Path) -> None:
    if pool.release(cg)[1]:
        workdir.read_result(folder / workdir.RESULT_NAME, 65536)
        os.rmdir(folder)


async def _pooled3(layout: Layout, work: Path, i: int, pool: Any) -> None:
    loop = asyncio.get_running_loop()
    folder = workdir.run_dir(work, f"b{i}", 1)
    cg = await loop.run_in_executor(cgroup_io(), _acquire, pool, folder)
    proc = await Process.start(
        ["/bin/sh", "-c", "true"], env=ENV, cwd=str(folder), on_output=lambda s, d: None, cgroup=cg
    )
    await proc.wait()
    await loop.run_in_executor(cgroup_io(), _release, pool, cg, folder)


async def _pooled(layout: Layout, work: Path, i: int, pool: Any) -> None:
    from nodes.executor import launch

    folder = workdir.run_dir(work, f"b{i}", 1)
    proc, _cg, _missing = await launch.start(
        ["/bin/sh", "-c", "true"],
        env=ENV,
        folder=folder,
        uid=None,
        gid=None,
        pool=pool,
        limits=LIMITS,
        on_output=lambda s, d: None,
    )
    await proc.wait()
    await launch.finish(pool, proc, folder, 65536)


def _io_threads_cpu() -> float:
    """CPU seconds of the ``cgroup-io`` pool's threads (by their native ids: Python's thread
    names are not the kernel's)."""
    total = 0
    for thread in list(getattr(cgroup_io(), "_threads", ())):
        try:
            data = Path(f"/proc/self/task/{thread.native_id}/stat").read_bytes()
        except (OSError, TypeError):
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _spin(stop: threading.Event) -> None:
    """Python on another thread two thirds of the time (2 ms on, 1 ms off), holding the GIL
    meanwhile, as a busy node's loop does to its cgroup-io threads (each syscall there gives the
    GIL up and must take it back)."""
    while not stop.is_set():
        until = time.perf_counter() + 0.002
        while time.perf_counter() < until:
            pass
        time.sleep(0.001)


async def _way(name: str, layout: Layout, work: Path, runs: int, conc: int) -> dict[str, float]:
    pool = None
    if name in ("pooled", "pooled3"):
        from nodes.executor.cgroup_pool import CgroupPool

        pool = CgroupPool(layout)

    async def one(i: int) -> None:
        if name == "session":
            await _session(work, i)
        elif pool is None:
            await _fresh(layout, work, i)
        elif name == "pooled3":
            await _pooled3(layout, work, i, pool)
        else:
            await _pooled(layout, work, i, pool)

    for i in range(20):  # warm-up (and the pool filled)
        await one(i)
    t = os.times()
    w = time.perf_counter()
    io = _io_threads_cpu()
    sem = asyncio.Semaphore(conc)

    async def gated(i: int) -> None:
        async with sem:
            await one(i)

    await asyncio.gather(*(gated(1000 + i) for i in range(runs)))
    wall = time.perf_counter() - w
    io = _io_threads_cpu() - io
    t2 = os.times()
    if pool is not None:
        pool.close()
    return {
        "user_ms": round((t2.user - t.user) / runs * 1000, 3),
        "system_ms": round((t2.system - t.system) / runs * 1000, 3),
        "cpu_ms": round((t2.user + t2.system - t.user - t.system) / runs * 1000, 3),
        "wall_ms": round(wall / runs * 1000, 3),
        "cgroup_io_ms": round(io / runs * 1000, 3),
        "load": round(os.getloadavg()[0], 2),
    }


async def measure(
    ways: list[str], runs: int, conc: int, rounds: int, busy: bool = False
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        layout = cgroups.detect("bench-execpath", tmp)
        if not layout.enabled:
            raise SystemExit(f"no usable cgroups here: {layout.reason}")
        work = Path(tmp) / "work"
        work.mkdir()
        out: dict[str, Any] = {"layout": layout.describe(), "runs": runs, "concurrency": conc}
        stop = threading.Event()
        if busy:
            threading.Thread(target=_spin, args=(stop,), daemon=True).start()
        try:
            for r in range(rounds):
                for name in ways:
                    out.setdefault(name, []).append(await _way(name, layout, work, runs, conc))
                    print(f"round {r} {name}: {out[name][-1]}", flush=True)
        finally:
            stop.set()
            cgroups.reap(layout)
            cgroups.remove_subtree(layout)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ways", default="session,fresh,pooled3,pooled")
    p.add_argument(
        "--busy",
        action="store_true",
        help="a thread runs Python two thirds of the time (as a busy node's loop): cpu_ms then "
        "includes it; cgroup_io_ms is the cgroup-io threads' alone",
    )
    args = p.parse_args()
    # the debug line per started process would be most of the measured CPU
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    ways = [w for w in args.ways.split(",") if w]
    print(
        json.dumps(
            asyncio.run(measure(ways, args.runs, args.concurrency, args.rounds, args.busy)),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
