"""Parallel creations against two in-process nodes (D512, D515): what the holds on a project's
caps cost. Not part of the suite; run in a tree (main's or the branch's), as pytest with the
suite's fixtures:

    PYTHONPATH=$PWD python -m pytest -q -n 0 -p no:cacheprovider -p tests.conftest \
        bench/admission_bursts.py -s [-k trigger|job]

Each prints, per round of ``N`` (500) parallel requests, the answers, the wall time and the CPU
of the process (both nodes and the client), then the load average.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any

import aiohttp

from tests.conftest import TEST_ADMIN_TOKEN, api_headers

N = int(os.environ.get("BURST_N", "500"))
A = "/api/v1/projects/a"
NOWHERE = {"selector": "role=nowhere"}  # the runs stay pending


async def rounds(cluster, nodes, method: str, target) -> list[Any]:
    out = []
    for rnd in range(2):
        async with aiohttp.ClientSession(headers=api_headers(TEST_ADMIN_TOKEN)) as http:

            async def one(i: int, rnd: int = rnd) -> int:
                path, body = target(rnd, i)
                async with http.request(method, cluster.url(nodes[i % 2], path), json=body) as r:
                    await r.read()
                    return r.status

            wall, cpu = time.perf_counter(), time.process_time()
            answers = Counter(await asyncio.gather(*(one(i) for i in range(N))))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            out.append((dict(answers), f"{wall:.2f} s", f"{cpu:.2f} s CPU"))
    return out


async def test_parallel_triggers(cluster):
    nodes = [await cluster.start("c1"), await cluster.start("c2")]
    job = {"name": "j", "command": "true", "target": NOWHERE}
    assert (await cluster.request("PUT", f"{A}/jobs/j", json=job))[0] == 201
    limits = {"runs_per_second": 10000, "run_burst": 10000, "max_pending_runs": 100000}
    assert (await cluster.request("PUT", f"{A}/run-limits", json=limits))[0] == 200
    res = await rounds(cluster, nodes, "POST", lambda rnd, i: (f"{A}/jobs/j/runs", {}))
    print("\ntriggers", res, "load", os.getloadavg())


async def test_parallel_job_creations(cluster):
    nodes = [await cluster.start("c1"), await cluster.start("c2")]

    def target(rnd: int, i: int) -> tuple[str, dict[str, Any]]:
        return f"{A}/jobs/r{rnd}j{i}", {"name": f"r{rnd}j{i}", "command": "true"}

    res = await rounds(cluster, nodes, "PUT", target)
    print("\njobs", res, "load", os.getloadavg())
