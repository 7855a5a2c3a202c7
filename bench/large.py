"""Large installations: ``python -m bench.large [--jobs 10000,100000] [--per-project 5000]``.

For each size: a fresh etcd holding that many jobs, then one ``cronmesh node`` with DEFAULT
settings started on it, and measured: how long until it leads and has loaded every job, until it
schedules (the first run of a probe job due every second), its memory (RSS now and peak), and the
time of the list APIs (one page of jobs at the start and in the middle of a project, projects,
nodes, runs) and of creating one more job in a full-sized project.

Setup writes the jobs straight into etcd through the store's own code (``Store._merge`` builds
each record, ``Store.size_ops`` its quota index entries; 42 jobs per transaction, 8 in flight),
not through the HTTP API: 100,000 API calls would take longer than everything measured. Jobs are
``true`` every day at 03:00 (none is due while measuring; the leader still plans each one at
start), spread over projects of ``--per-project`` jobs (the default quota is 10,000 per project).
Writes ``bench/results/large.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    NodeProc,
    Procs,
    auth_headers,
    bench_etcd,
    code_version,
    machine_info,
)
from cluster.etcd import Etcd, Op
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import JobSpec
from cluster.store import MAX_TXN_OPS, Store, dumps

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "/large"
JOBS_PER_TXN = MAX_TXN_OPS // 3  # the job, its two size-index entries
API = "/api/v1"


def clock() -> datetime:
    return datetime.now(UTC)


def cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def write_jobs(etcd: Etcd, n: int, per_project: int) -> dict[str, Any]:
    """``n`` jobs over projects ``p000``…, and a probe project with one job every second."""
    keys = Keys(PREFIX)
    store = Store(etcd, keys, Snowflake(1), clock)
    t0 = time.monotonic()
    sem = asyncio.Semaphore(8)

    async def chunk(project: str, names: list[str]) -> None:
        ops: list[Any] = []
        for name in names:
            spec = JobSpec.model_validate(
                {"name": name, "command": "true", "schedules": [{"cron": "0 3 * * *"}]}
            )
            doc = store._merge(project, spec, None).model_dump_json()
            ops += [
                Op.put(keys.job(project, name), doc),
                *store.size_ops(project, "job", name, doc),
            ]
        async with sem:
            await etcd.txn([], ops)

    projects = [f"p{i:03d}" for i in range((n + per_project - 1) // per_project)]
    tasks = []
    for i, project in enumerate(projects):
        await etcd.put(keys.project(project), dumps({"name": project}))
        count = min(per_project, n - i * per_project)
        names = [f"j{k:06d}" for k in range(count)]
        for k in range(0, count, JOBS_PER_TXN):
            tasks.append(asyncio.create_task(chunk(project, names[k : k + JOBS_PER_TXN])))
    await asyncio.gather(*tasks)
    probe = JobSpec.model_validate(
        {"name": "probe", "command": "true", "schedules": [{"cron": "* * * * * *"}]}
    )
    doc = store._merge("probe", probe, None).model_dump_json()
    await etcd.put(keys.project("probe"), dumps({"name": "probe"}))
    await etcd.txn(
        [], [Op.put(keys.job("probe", "probe"), doc), *store.size_ops("probe", "job", "probe", doc)]
    )
    status = await etcd.range(keys.jobs(), count_only=True)
    return {
        "jobs": status.count,
        "projects": len(projects),
        "per_project": per_project,
        "write_s": round(time.monotonic() - t0, 2),
        "jobs_per_s": round(n / (time.monotonic() - t0)),
    }


def log_events(path: Path, wanted: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The first line of each ``wanted`` event in a node's JSON log (shard 0's, where a line
    names its shard), under the name ``wanted`` gives it."""
    found: dict[str, dict[str, Any]] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        name = wanted.get(doc.get("event", ""))
        if name and name not in found and doc.get("shard", 0) == 0:
            found[name] = doc
    return found


def log_times(path: Path) -> dict[str, float]:
    """Wall times of the node's start-up events, from its JSON log."""
    docs = log_events(path, {"became leader": "elected", "scheduler leading": "loaded"})
    return {
        name: datetime.fromisoformat(doc["timestamp"]).timestamp() for name, doc in docs.items()
    }


async def timed(http: aiohttp.ClientSession, url: str, times: int = 10) -> dict[str, Any]:
    """p50 and max of ``times`` GETs of ``url`` (the answer's size too)."""
    took: list[float] = []
    size = 0
    for _ in range(times):
        t = time.perf_counter()
        async with http.get(url) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET {url}: {resp.status} {body[:200]!r}")
        took.append(time.perf_counter() - t)
        size = len(body)
    return {
        "p50_ms": round(statistics.median(took) * 1000, 1),
        "max_ms": round(max(took) * 1000, 1),
        "bytes": size,
    }


async def measure(args: argparse.Namespace, n: int, procs: Procs, tmp: Path) -> dict[str, Any]:
    folder = tmp / f"jobs-{n}"
    folder.mkdir()
    async with bench_etcd(folder, procs) as (etcd_server, etcd):
        doc: dict[str, Any] = {"jobs": n, "load_average_start": list(os.getloadavg())}
        print(f"[{time.strftime('%H:%M:%S')}] writing {n} jobs", flush=True)
        doc["setup"] = await write_jobs(etcd, n, args.per_project)
        print(f"  {doc['setup']}", flush=True)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout, headers=auth_headers()) as http:
            # The first leader ever: plans every job and writes each one's first schedule
            # state. Then a new leader over the same jobs (states present): the fail-over case.
            first, doc["startup_first_leader"] = await start_leader(
                etcd, etcd_server.endpoint, http, folder, "large-1"
            )
            print(f"  first leader: {doc['startup_first_leader']}", flush=True)
            await asyncio.to_thread(first.stop)
            procs.remove(first)
            node, doc["startup"] = await start_leader(
                etcd, etcd_server.endpoint, http, folder, "large-2"
            )
            procs.add(node)
            print(f"  new leader: {doc['startup']}", flush=True)
            base = node.url + API
            middle = f"j{args.per_project // 2:06d}"
            doc["api"] = {
                "jobs_first_page_100": await timed(http, f"{base}/projects/p000/jobs?limit=100"),
                "jobs_middle_page_100": await timed(
                    http, f"{base}/projects/p000/jobs?limit=100&after={middle}"
                ),
                "jobs_page_1000": await timed(http, f"{base}/projects/p000/jobs?limit=1000"),
                "projects_page": await timed(http, f"{base}/projects?limit=100"),
                "nodes": await timed(http, f"{base}/nodes"),
                "runs_page_100": await timed(http, f"{base}/projects/probe/runs?limit=100"),
                "status": await timed(http, f"{node.url}/status"),
            }
            doc["api"]["put_job_into_full_project"] = await put_times(http, base)
            print(f"  {doc['api']}", flush=True)
            doc["startup"]["rss_after_api_mib"] = round(status_kib(node.pid, "VmRSS") / 1024, 1)
            await asyncio.to_thread(node.stop)
            procs.remove(node)
    doc["load_average_end"] = list(os.getloadavg())
    return doc


async def start_leader(
    etcd: Etcd, endpoint: str, http: aiohttp.ClientSession, folder: Path, name: str
) -> tuple[NodeProc, dict[str, Any]]:
    """A node with default settings, alone: when it was elected, had loaded every job, and wrote
    the probe's first run; then a few seconds more for its first pass over every job."""
    started = time.time()
    node = NodeProc(
        etcd=endpoint,
        prefix=PREFIX,
        node_id=name,
        data_dir=folder / f"data-{name}",
        log_path=folder / f"{name}.log",
        capacity=None,  # default settings
    )
    await node.wait_leading(http, within=300)
    leading = time.time()
    elected = log_times(node.log_path).get("elected", started)
    first_probe = await first_run(etcd, after=elected, within=300)
    cpu_at_probe = cpu_s(node.pid)
    events = log_times(node.log_path)
    doc = {
        "node_cpu_s_until_probe_run": cpu_at_probe,
        "process_start_to_elected_s": _delta(started, events.get("elected")),
        "elected_to_jobs_loaded_s": _delta(events.get("elected"), events.get("loaded")),
        "elected_to_probe_run_written_s": _delta(events.get("elected"), first_probe),
        "process_start_to_leader_metric_s": round(leading - started, 2),
        "lease_lost": "lease lost" in node.log_path.read_text(errors="replace"),
    }
    await asyncio.sleep(5)
    doc["rss_mib"] = round(status_kib(node.pid, "VmRSS") / 1024, 1)
    doc["peak_rss_mib"] = round(status_kib(node.pid, "VmHWM") / 1024, 1)
    return node, doc


async def put_times(http: aiohttp.ClientSession, base: str, times: int = 5) -> dict[str, Any]:
    took = []
    for i in range(times):
        body = {"command": "true", "schedules": [{"cron": "0 3 * * *"}]}
        t = time.perf_counter()
        async with http.put(f"{base}/projects/p000/jobs/extra{i}", json=body) as resp:
            text = await resp.text()
            if resp.status not in (200, 201):
                raise RuntimeError(f"PUT: {resp.status} {text[:200]}")
        took.append(time.perf_counter() - t)
    return {
        "p50_ms": round(statistics.median(took) * 1000, 1),
        "max_ms": round(max(took) * 1000, 1),
    }


async def first_run(etcd: Etcd, after: float, within: float) -> float | None:
    """Wall time the probe's first run written after ``after`` was written (its
    ``created_at``). The probe's project sorts after every other: of the jobs all due at a new
    leader's start, it is planned last (the worst case)."""
    keys = Keys(PREFIX)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        res = await etcd.range_all(keys.runs("probe"))
        times = [
            datetime.fromisoformat(json.loads(kv.value)["created_at"]).timestamp() for kv in res.kvs
        ]
        later = [t for t in times if t > after]
        if later:
            return min(later)
        await asyncio.sleep(0.2)
    return None


def _delta(a: float | None, b: float | None) -> float | None:
    return round(b - a, 2) if a is not None and b is not None else None


async def amain(args: argparse.Namespace) -> int:
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-large-"))
    sizes = [int(s) for s in re.split(r"[,\s]+", args.jobs) if s]
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info("n/a"),
        "code": code_version(),
        "sizes": [],
    }
    try:
        for n in sizes:
            out["sizes"].append(await measure(args, n, procs, tmp))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)  # 100,000 jobs' etcd data
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "large.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["sizes"], indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.large", description=__doc__)
    ap.add_argument("--jobs", default="10000,100000", help="sizes, comma-separated")
    ap.add_argument("--per-project", type=int, default=5000)
    return asyncio.run(amain(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
