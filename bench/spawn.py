"""What a cgroup per run costs the spawn path: ``python -m bench.spawn [--runs 300]``.

Spawns ``/bin/sh -c true`` the way the worker does (``nodes.executor.process.Process``), one after
the other on one event loop, three ways: a plain session (``cgroups: off``, the path before D150),
armed and released at once (what the cgroup path adds without the cgroup), and with a cgroup per
run (created with limits, the process moved in before its release, removed after). Prints the
median and p90 of each step in milliseconds: spawn (what ``cronmesh_spawn_seconds`` measures),
the cgroup's creation and removal, and the whole run (spawn to cgroup removed); and this
process's CPU per run, user and kernel (``cpu_ms``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from typing import Any

from nodes.executor import cgroups
from nodes.executor.process import Process

ENV = {"PATH": "/usr/bin:/bin"}


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered) * 1000, 3),
        "p90": round(ordered[int(len(ordered) * 0.9)] * 1000, 3),
    }


def _cpu() -> tuple[float, float]:
    t = os.times()
    return t.user, t.system


async def _one(layout: cgroups.Layout | None, armed: bool, i: int) -> dict[str, float]:
    t0 = time.perf_counter()
    cg = None
    if layout is not None:
        cg = cgroups.RunCgroup(layout, f"bench-{i}")
        cg.create(memory=256 << 20, cpu=1.0, pids=100)
    t1 = time.perf_counter()
    proc = await Process.start(
        ["/bin/sh", "-c", "true"],
        env=ENV,
        cwd="/tmp",
        on_output=lambda s, d: None,
        armed=armed,
        cgroup=cg,
    )
    t2 = time.perf_counter()
    if armed and cg is None:
        proc.release()
    await proc.wait()
    t3 = time.perf_counter()
    if cg is not None:
        cg.usage()
        cg.remove()
    t4 = time.perf_counter()
    return {"create": t1 - t0, "spawn": t2 - t1, "remove": t4 - t3, "total": t4 - t0}


async def measure(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        layout = cgroups.detect("bench-spawn", tmp)
        ways: dict[str, tuple[cgroups.Layout | None, bool]] = {"session": (None, False)}
        ways["armed"] = (None, True)
        if layout.enabled:
            ways[f"cgroup ({layout.mode})"] = (layout, False)
        out: dict[str, Any] = {"layout": layout.describe(), "runs": runs}
        try:
            for name, (lay, armed) in ways.items():
                for i in range(10):  # warm-up
                    await _one(lay, armed, i)
                cpu = _cpu()
                samples = [await _one(lay, armed, i) for i in range(runs)]
                used = [(b - a) / runs * 1000 for a, b in zip(cpu, _cpu(), strict=True)]
                out[name] = {k: _ms([s[k] for s in samples]) for k in samples[0]}
                # this process's CPU per run (all its threads), user and kernel, in ms
                out[name]["cpu_ms"] = {"user": round(used[0], 3), "system": round(used[1], 3)}
        finally:
            cgroups.reap(layout) if layout.enabled else None
            cgroups.remove_subtree(layout)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=300)
    args = p.parse_args()
    print(json.dumps(asyncio.run(measure(args.runs)), indent=2))


if __name__ == "__main__":
    main()
