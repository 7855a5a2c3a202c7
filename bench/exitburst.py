"""Event-loop stall when many job processes exit together (executor leftover cleanup).

    python -m bench.exitburst [--jobs 200] [--repeat 3]

Starts ``--jobs`` processes through ``nodes.executor.process.Process`` that all wait for one
file, then
creates the file: they exit within a few ms of each other. A 1 ms ticker on the same loop records
the longest gap (the loop's stall); also reported: the time until every ``wait()`` returned.
No etcd, no node: this isolates the executor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import structlog

from nodes.executor.process import Process


async def once(n: int, folder: Path) -> dict[str, float]:
    go = folder / "go"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    procs = [
        await Process.start(
            ["/bin/sh", "-c", "while [ ! -e go ]; do sleep 0.01; done"],
            env=env,
            cwd=str(folder),
            on_output=lambda _s, _b: None,
        )
        for _ in range(n)
    ]
    await asyncio.sleep(0.3)
    gaps: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    go.touch()
    await asyncio.gather(*(p.wait() for p in procs))
    all_done = time.perf_counter() - t0
    stop = True
    await tick
    go.unlink()
    return {"all_waited_ms": all_done * 1000, "max_loop_stall_ms": max(gaps) * 1000}


async def amain(n: int, repeat: int) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="cronmesh-exitburst-") as tmp:
        return [await once(n, Path(tmp)) for _ in range(repeat)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    results = asyncio.run(amain(args.jobs, args.repeat))
    print(json.dumps({"jobs": args.jobs, "runs": results}))


if __name__ == "__main__":
    main()
