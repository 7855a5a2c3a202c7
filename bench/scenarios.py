"""The scenarios: each starts its own node on a fresh key prefix of the shared etcd, loads jobs
through the HTTP API, measures over a window aligned on whole seconds, stops the node and removes
its keys. Measurements come from the run records in etcd (exact per-run timestamps), the node's
and etcd's /metrics, and CPU counters in /proc, taken at the window's edges only, so the
benchmark itself adds no etcd traffic inside a window.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import pstats
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    BenchEtcd,
    NodeProc,
    ProcCpu,
    Procs,
    Samples,
    by_label,
    diff,
    machine_cpu,
    parse_prom,
    proc_cpu,
    put_jobs,
    sleep_until,
    value,
)
from bench.records import RunDoc, count, read_runs
from bench.stats import histogram_summary_ms, summary_ms
from cluster.etcd import Etcd

PROJECT = "bench"
RESULTS = Path(__file__).resolve().parent / "results"
EDGE = 0.2  # the lag window's snapshots are taken this long before a tick
ETCD_COUNTERS = (
    "etcd_mvcc_put_total",
    "etcd_mvcc_txn_total",
    "etcd_mvcc_range_total",
    "etcd_mvcc_delete_total",
)


@dataclass(frozen=True)
class Mode:
    quick: bool
    profile: bool = False
    e2e_capacity: int | None = None  # None: the node's default settings (D261)
    lag_jobs: int = 100
    lag_capacity: int | None = None  # None: the node's default settings (D260)
    window: int | None = None  # the lag window, when not the mode's

    @property
    def warmup(self) -> float:
        return 3.0 if self.quick else 5.0

    @property
    def sched_levels(self) -> tuple[int, ...]:
        """Jobs every second offered to the scheduler alone (one fresh node per level)."""
        return (500,) if self.quick else (500, 1000)

    @property
    def e2e_levels(self) -> tuple[int, ...]:
        """Jobs every second offered end to end (one fresh node per level)."""
        # quick mode steps by 200 (it stopped at 150 and 800, which said nothing of 200-600)
        return (200, 400, 600, 800) if self.quick else (150, 200, 400, 600, 800)

    @property
    def sched_window(self) -> int:
        return 8 if self.quick else 20

    @property
    def e2e_window(self) -> int:
        return 8 if self.quick else 15

    @property
    def lag_window(self) -> int:
        if self.window is not None:
            return self.window
        return 10 if self.quick else 30

    @property
    def lag_rates(self) -> tuple[int, ...]:
        """The steady rate sweep (runs/s); ``lag_jobs`` gives the CPU and etcd per run too."""
        return (100, 500) if self.quick else (50, 100, 200, 500, 1000)

    @property
    def bursts(self) -> tuple[int, ...]:
        """Jobs due at the same instant (one fresh node per size)."""
        return (1000,) if self.quick else (1000, 5000)

    @property
    def kills(self) -> int:
        """Leader kills (SIGKILL) of the fail-over scenario; graceful stops are a third of it."""
        return 3 if self.quick else 10


@dataclass
class Context:
    etcd_server: BenchEtcd
    etcd: Etcd
    http: aiohttp.ClientSession
    tmp: Path
    procs: Procs
    mode: Mode
    log: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        self.log.append(line)
        print(line, flush=True)


# -- snapshots -----------------------------------------------------------------------------------


@dataclass
class Snapshot:
    wall: float
    took: float
    node_text: str
    etcd_text: str
    node_cpu: ProcCpu
    etcd_cpu: ProcCpu
    machine: tuple[float, float]
    log_bytes: int

    @property
    def node(self) -> Samples:
        return parse_prom(self.node_text)

    @property
    def etcd(self) -> Samples:
        return parse_prom(self.etcd_text)


async def snapshot(ctx: Context, node: NodeProc) -> Snapshot:
    """Counters at one instant: texts are fetched first, parsed only when used."""

    async def get(url: str) -> str:
        async with ctx.http.get(url) as resp:
            return await resp.text()

    wall = time.time()
    t = time.perf_counter()
    node_text, etcd_text = await asyncio.gather(
        get(f"{node.url}/metrics"), get(f"{ctx.etcd_server.endpoint}/metrics")
    )
    took = time.perf_counter() - t
    return Snapshot(
        wall=wall,
        took=took,
        node_text=node_text,
        etcd_text=etcd_text,
        node_cpu=proc_cpu(node.pid),
        etcd_cpu=proc_cpu(ctx.etcd_server.pid),
        machine=machine_cpu(),
        log_bytes=node.log_path.stat().st_size,
    )


def cpu_delta(before: Snapshot, after: Snapshot, runs: int) -> dict[str, Any]:
    seconds = after.wall - before.wall
    node_s = after.node_cpu.self_s - before.node_cpu.self_s
    jobs_s = after.node_cpu.children_s - before.node_cpu.children_s
    etcd_s = after.etcd_cpu.self_s - before.etcd_cpu.self_s
    node_sys_s = after.node_cpu.system_s - before.node_cpu.system_s
    busy = after.machine[0] - before.machine[0]
    total = after.machine[1] - before.machine[1]
    per = max(runs, 1)
    return {
        "seconds": round(seconds, 3),
        "snapshot_s": [round(before.took, 3), round(after.took, 3)],
        "runs": runs,
        "node_cpu_s": round(node_s, 3),
        "job_processes_cpu_s": round(jobs_s, 3),
        "etcd_cpu_s": round(etcd_s, 3),
        "node_ms_per_run": round(node_s / per * 1000, 3),
        "node_system_ms_per_run": round(node_sys_s / per * 1000, 3),
        "etcd_ms_per_run": round(etcd_s / per * 1000, 3),
        "node_plus_etcd_ms_per_run": round((node_s + etcd_s) / per * 1000, 3),
        "job_processes_ms_per_run": round(jobs_s / per * 1000, 3),
        "node_cores": round(node_s / seconds, 3) if seconds else None,
        "etcd_cores": round(etcd_s / seconds, 3) if seconds else None,
        "machine_busy_fraction": round(busy / total, 3) if total else None,
        "node_log_bytes_per_run": round((after.log_bytes - before.log_bytes) / per, 1),
    }


def etcd_delta(before: Snapshot, after: Snapshot, runs: int) -> dict[str, Any]:
    d = diff(after.etcd, before.etcd)
    per = max(runs, 1)
    rev = value(after.etcd, "etcd_debugging_mvcc_current_revision") - value(
        before.etcd, "etcd_debugging_mvcc_current_revision"
    )
    grpc = {
        m: int(v)
        for m, v in sorted(by_label(d, "grpc_server_handled_total", "grpc_method").items())
        if v
    }
    msgs = {
        m: int(v)
        for m, v in sorted(by_label(d, "grpc_server_msg_received_total", "grpc_method").items())
        if v
    }
    totals = {name: int(value(d, name)) for name in ETCD_COUNTERS}
    received = value(d, "etcd_network_client_grpc_received_bytes_total")
    sent = value(d, "etcd_network_client_grpc_sent_bytes_total")
    return {
        "runs": runs,
        "bytes_received_per_run": round(received / per),
        "bytes_sent_per_run": round(sent / per),
        "revision_delta": int(rev),
        "write_txns_per_run": round(rev / per, 3),
        "totals": totals,
        "per_run": {name: round(v / per, 3) for name, v in totals.items()},
        "grpc_handled_by_method": grpc,
        "grpc_handled_per_run": {m: round(v / per, 3) for m, v in grpc.items()},
        "grpc_msgs_received_by_method": msgs,
        "grpc_msgs_received_per_run": {m: round(v / per, 3) for m, v in msgs.items()},
    }


# -- helpers -------------------------------------------------------------------------------------


def new_prefix(name: str) -> str:
    return f"/bench-{name}-{uuid.uuid4().hex[:8]}"


def node_proc(
    ctx: Context,
    prefix: str,
    name: str,
    *,
    capacity: int | None,
    properties: dict[str, str] | None = None,
    lease_ttl: int | None = None,  # the node's default; 3 s until 2026-12-07 (D391)
) -> NodeProc:
    """A ``cronmesh node`` on the bench's etcd, its data and log in the run's folder; stopped
    with everything else the run started."""
    node = NodeProc(
        etcd=ctx.etcd_server.endpoint,
        prefix=prefix,
        node_id=name,
        data_dir=ctx.tmp / f"data-{name}",
        log_path=ctx.tmp / f"{name}.log",
        capacity=capacity,
        properties=properties,
        lease_ttl=lease_ttl,
        profile=ctx.tmp / f"{name}.prof" if ctx.mode.profile else None,
    )
    ctx.procs.add(node)
    return node


async def start_node(
    ctx: Context, prefix: str, name: str, *, capacity: int | None, properties: dict[str, str]
) -> NodeProc:
    """The one node of a scenario, once it leads."""
    node = node_proc(ctx, prefix, name, capacity=capacity, properties=properties)
    await node.wait_leading(ctx.http)
    return node


async def profile_report(ctx: Context, node: NodeProc, name: str) -> None:
    """Top functions of the node's profile of the window, to bench/results/<name>.profile.txt."""
    if node.profile is None:
        return
    for _ in range(50):
        if node.profile.exists():
            break
        await asyncio.sleep(0.1)
    else:
        ctx.say(f"no profile written by {node!r}")
        return
    buf = io.StringIO()
    stats = pstats.Stats(str(node.profile), stream=buf)
    stats.strip_dirs()
    for key in ("tottime", "cumulative"):
        buf.write(f"\n==== by {key} ====\n")
        stats.sort_stats(key).print_stats(45)
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(node.profile, RESULTS / f"{name}.prof")
    path = RESULTS / f"{name}.profile.txt"
    path.write_text(buf.getvalue())
    ctx.say(f"wrote {path}")


async def cleanup(ctx: Context, node: NodeProc, prefix: str) -> None:
    """Stop the node, delete every key of the scenario and compact etcd's history away."""
    await asyncio.to_thread(node.stop)
    ctx.procs.remove(node)
    # A 30 s window at 500 runs/s leaves ~10^5 keys: one DeleteRange of them outlasts the client's
    # 5 s deadline on a loaded machine, which aborted the whole benchmark; give it time.
    timeout, ctx.etcd.timeout = ctx.etcd.timeout, max(ctx.etcd.timeout, 120.0)
    try:
        await ctx.etcd.delete(prefix + "/", prefix=True)
    finally:
        ctx.etcd.timeout = timeout
    status = await ctx.etcd.status()
    await asyncio.to_thread(ctx.etcd_server.compact, int(status["revision"]))


def window_start(warmup_end: float) -> int:
    return math.ceil(warmup_end) + 1


def per_second(times: Iterable[float], t0: int, t1: int) -> list[int]:
    counts = Counter(int(t) for t in times if t0 <= t < t1)
    return [counts.get(s, 0) for s in range(t0, t1)]


def series_stats(series: list[int]) -> dict[str, Any]:
    if not series:
        return {}
    return {"min": min(series), "max": max(series), "first": series[0], "last": series[-1]}


async def put_jobs_frozen(ctx: Context, node: NodeProc, n: int, **kw: Any) -> list[str]:
    """``put_jobs`` while the cluster is frozen (every slot skipped), then unfrozen: the jobs
    start firing together once they all exist. Creating them unfrozen, the first ones fired while
    the API created the rest, and a level started its window behind by the runs of its own setup
    (D388)."""
    url = f"{node.url}/api/v1/freeze"
    async with ctx.http.put(url, json={"note": "bench: creating the jobs"}) as resp:
        if resp.status >= 300:
            raise RuntimeError(f"PUT {url}: {resp.status} {await resp.text()}")
    try:
        return await put_jobs(ctx.http, node, PROJECT, n, **kw)
    finally:
        async with ctx.http.delete(url) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"DELETE {url}: {resp.status} {await resp.text()}")


@dataclass
class Window:
    """One measured window of a throughput level: edges, snapshots, queue depth, the runs."""

    t0: int
    t1: int
    create_s: float
    before: Snapshot
    after: Snapshot
    q0: int
    q1: int
    runs: list[Any]


async def measure_window(
    ctx: Context,
    node: NodeProc,
    prefix: str,
    name: str,
    n: int,
    seconds: int,
    selector: str = "",
) -> Window:
    """Create ``n`` every-second jobs, warm up, measure ``seconds`` on whole-second edges, then
    stop the node, read the runs and clean the prefix away."""
    try:
        t = time.monotonic()
        await put_jobs_frozen(ctx, node, n, selector=selector)
        create_s = time.monotonic() - t
        await asyncio.sleep(ctx.mode.warmup)
        t0 = window_start(time.time())
        t1 = t0 + seconds
        await sleep_until(t0)
        before = await snapshot(ctx, node)
        q0 = await count(ctx.etcd, f"{prefix}/queue/")
        node.profiling(True)
        await sleep_until(t1)
        node.profiling(False)
        after = await snapshot(ctx, node)
        q1 = await count(ctx.etcd, f"{prefix}/queue/")
    finally:
        await asyncio.to_thread(node.stop)
    await profile_report(ctx, node, name)
    runs = await read_runs(ctx.etcd, prefix, PROJECT)
    await cleanup(ctx, node, prefix)
    return Window(t0, t1, create_s, before, after, q0, q1, runs)


# -- 1. the scheduler alone ----------------------------------------------------------------------


async def scheduler_throughput(ctx: Context) -> dict[str, Any]:
    """Leader only: jobs whose selector no node matches, so runs stay queued and nobody runs
    them. Measures runs created per second and how late each tick was fired, per load level."""
    levels = [await scheduler_level(ctx, n) for n in ctx.mode.sched_levels]
    return {
        "scenario": "scheduler_throughput",
        "max_fired_per_s": max(lv["runs_created_per_s"] for lv in levels),
        "levels": levels,
    }


async def scheduler_level(ctx: Context, n: int) -> dict[str, Any]:
    mode = ctx.mode
    prefix = new_prefix("sched")
    ctx.say(f"scheduler: {n} jobs every second, selector role=none (no worker claims them)")
    # default settings: nobody claims these runs, the capacity plays no part
    node = await start_node(ctx, prefix, f"sched-{n}", capacity=None, properties={"role": "bench"})
    w = await measure_window(
        ctx, node, prefix, f"scheduler_throughput-{n}", n, mode.sched_window, "role=none"
    )
    t0, t1, create_s, before, after, q0, q1, runs = (
        w.t0,
        w.t1,
        w.create_s,
        w.before,
        w.after,
        w.q0,
        w.q1,
        w.runs,
    )

    seconds = after.wall - before.wall
    created = [r for r in runs if t0 <= r.created_at < t1]
    nd = diff(after.node, before.node)
    fired = value(nd, "cronmesh_ticks_total", fate="fired")
    missed = value(nd, "cronmesh_ticks_total", fate="missed")
    series = per_second((r.created_at for r in runs), t0, t1)
    fire_lag = [r.created_at - r.scheduled_at for r in created if r.scheduled_at is not None]
    sources = Counter(r.source for r in created)
    keeps_up = len(created) >= 0.99 * n * (t1 - t0) and missed == 0
    return {
        "jobs": n,
        "offered_ticks_per_s": n,
        "keeps_up": keeps_up,
        "window_s": t1 - t0,
        "job_creation_s": round(create_s, 2),
        "runs_created_in_window": len(created),
        "runs_created_per_s": round(len(created) / (t1 - t0), 1),
        "ticks_fired_per_s_metric": round(fired / seconds, 1),
        "ticks_missed_in_window_metric": int(missed),
        "sources": dict(sources),
        "created_per_second": series,
        "created_per_second_stats": series_stats(series),
        "fire_lag": summary_ms(fire_lag),
        "fire_lag_histogram": histogram_summary_ms(nd, "cronmesh_fire_lag_seconds"),
        "queue_depth_start": q0,
        "queue_depth_end": q1,
        "cpu": cpu_delta(before, after, len(created)),
        "etcd": etcd_delta(before, after, len(created)),
    }


# -- 2. trivial runs end to end ------------------------------------------------------------------


async def e2e_throughput(ctx: Context) -> dict[str, Any]:
    """One node schedules and runs ``true`` for many every-second jobs; counts runs finished, per
    load level. A level is *sustained* when (nearly) every offered run finishes in the window and
    the queue does not grow."""
    levels = [await e2e_level(ctx, n) for n in ctx.mode.e2e_levels]
    sustained = [lv for lv in levels if lv["sustained"]]
    return {
        "scenario": "e2e_throughput",
        "max_sustained_per_s": max((lv["succeeded_per_s"] for lv in sustained), default=0.0),
        "max_sustained_offered": max((lv["jobs"] for lv in sustained), default=0),
        "peak_succeeded_per_s": max(lv["succeeded_per_s"] for lv in levels),
        "levels": levels,
    }


async def e2e_level(ctx: Context, n: int) -> dict[str, Any]:
    mode = ctx.mode
    prefix = new_prefix("e2e")
    settings = "default settings" if mode.e2e_capacity is None else f"capacity {mode.e2e_capacity}"
    ctx.say(f"end to end: {n} jobs every second running `true`, {settings}")
    node = await start_node(ctx, prefix, f"e2e-{n}", capacity=mode.e2e_capacity, properties={})
    w = await measure_window(ctx, node, prefix, f"e2e_throughput-{n}", n, mode.e2e_window)
    t0, t1, create_s, before, after, q0, q1, runs = (
        w.t0,
        w.t1,
        w.create_s,
        w.before,
        w.after,
        w.q0,
        w.q1,
        w.runs,
    )

    seconds = after.wall - before.wall
    finished = [
        r
        for r in runs
        if r.status == "succeeded" and r.finished_at is not None and t0 <= r.finished_at < t1
    ]
    created = [r for r in runs if t0 <= r.created_at < t1]
    failed = Counter(
        r.status
        for r in runs
        if r.status not in ("succeeded", "pending", "running")
        and r.finished_at is not None
        and t0 <= r.finished_at < t1
    )
    nd = diff(after.node, before.node)
    series = per_second((r.finished_at for r in finished if r.finished_at is not None), t0, t1)
    start_lag = [
        r.started_at - r.scheduled_at
        for r in finished
        if r.started_at is not None and r.scheduled_at is not None
    ]
    window = t1 - t0
    missed = int(value(nd, "cronmesh_ticks_total", fate="missed"))
    sustained = len(finished) >= 0.95 * n * window and q1 - q0 <= 0.05 * n * window and missed == 0
    return {
        "jobs": n,
        "sustained": sustained,
        "offered_runs_per_s": n,
        "capacity": mode.e2e_capacity or "default",
        "window_s": t1 - t0,
        "job_creation_s": round(create_s, 2),
        "succeeded_in_window": len(finished),
        "succeeded_per_s": round(len(finished) / (t1 - t0), 1),
        "succeeded_per_s_metric": round(
            value(nd, "cronmesh_runs_finished_total", status="succeeded") / seconds, 1
        ),
        "other_finished_in_window": dict(failed),
        "runs_created_per_s": round(len(created) / (t1 - t0), 1),
        "ticks_missed_in_window_metric": missed,
        "claims": {k: int(v) for k, v in by_label(nd, "cronmesh_claims_total", "outcome").items()},
        "finished_per_second": series,
        "finished_per_second_stats": series_stats(series),
        "queue_depth_start": q0,
        "queue_depth_end": q1,
        "start_lag_of_finished": summary_ms(start_lag),
        "cpu": cpu_delta(before, after, len(finished)),
        "etcd": etcd_delta(before, after, len(finished)),
    }


# -- 3-5. lag at a steady rate, etcd requests and CPU per run ------------------------------------


def tick_accounting(
    runs: list[RunDoc], jobs: list[str], t0: int, t1: int
) -> tuple[list[RunDoc], int, int, int]:
    """Runs of ticks in [t0, t1), missed ticks, ticks with more than one run, extra runs."""
    in_window = [r for r in runs if r.scheduled_at is not None and t0 <= r.scheduled_at < t1]
    per_tick = Counter((r.job, round(r.scheduled_at or 0, 3)) for r in in_window)
    expected = {(j, float(s)) for j in jobs for s in range(t0, t1)}
    missed = len(expected - set(per_tick))
    dupes = sum(1 for c in per_tick.values() if c > 1)
    extra = sum(c - 1 for c in per_tick.values() if c > 1)
    return in_window, missed, dupes, extra


SETTLE_S = 30.0  # how long a node that is behind may take to finish the window's runs


async def settle(ctx: Context, prefix: str, t0: int, t1: int) -> float | None:
    """Until every run of the window's ticks has ended (the node keeps running), at most
    ``SETTLE_S``: a node seconds behind under load would otherwise be stopped with the window's
    last runs still queued or armed, and the drain ends those as ``lost`` (a measurement, not a
    loss). Answers the seconds waited, None when runs were still unfinished."""
    start = time.monotonic()
    while True:
        runs = await read_runs(ctx.etcd, prefix, PROJECT)
        open_ = [
            r
            for r in runs
            if r.scheduled_at is not None
            and t0 <= r.scheduled_at < t1
            and r.status in ("pending", "running")
        ]
        waited = round(time.monotonic() - start, 1)
        if not open_:
            return waited
        if waited >= SETTLE_S:
            return None
        await asyncio.sleep(1.0)


def missed_per_second(runs: list[RunDoc], jobs: list[str], t0: int, t1: int) -> list[int]:
    """How many of each second's ticks in [t0, t1) have no run at all."""
    have = {(r.job, round(r.scheduled_at, 3)) for r in runs if r.scheduled_at is not None}
    return [sum(1 for j in jobs if (j, float(s)) not in have) for s in range(t0, t1)]


async def steady_lag(ctx: Context) -> dict[str, dict[str, Any]]:
    """The rate sweep: ``steady_lag_at`` for each rate of the mode (one fresh node per rate)."""
    docs: dict[str, dict[str, Any]] = {}
    for n in ctx.mode.lag_rates:
        docs.update(await steady_lag_at(ctx, n))
    return docs


def sample(values: list[float], limit: int = 5000) -> list[float]:
    """At most ``limit`` of ``values`` (every k-th), rounded to 0.1 ms, for plots in the JSON."""
    step = max(1, math.ceil(len(values) / limit))
    return [round(v * 1000, 1) for v in values[::step]]


def worst_ticks(runs: list[RunDoc], top: int = 5) -> list[dict[str, Any]]:
    """The ticks whose last run started latest: is a tail one bad second or spread out?"""
    by_tick: dict[float, list[float]] = {}
    for r in runs:
        if r.started_at is not None and r.scheduled_at is not None:
            by_tick.setdefault(r.scheduled_at, []).append(r.started_at - r.scheduled_at)
    worst = sorted(by_tick.items(), key=lambda kv: -max(kv[1]))[:top]
    return [
        {
            "tick": tick,
            "max_ms": round(max(lags) * 1000, 1),
            "over_40ms": sum(1 for x in lags if x > 0.04),
            "runs": len(lags),
        }
        for tick, lags in worst
    ]


async def steady_lag_at(ctx: Context, n: int) -> dict[str, dict[str, Any]]:
    """``n`` jobs every second for ``lag_window`` seconds; answers the lag document ``lag_<n>``,
    and at the reference rate (``lag_jobs``) the etcd requests and the CPU per run over the
    same window."""
    mode = ctx.mode
    prefix = new_prefix(f"lag{n}")
    settings = "default settings" if mode.lag_capacity is None else f"capacity {mode.lag_capacity}"
    ctx.say(f"steady lag: {n} jobs every second (= {n} runs/s) for {mode.lag_window} s, {settings}")
    node = await start_node(ctx, prefix, f"lag-{n}", capacity=mode.lag_capacity, properties={})
    try:
        jobs = await put_jobs_frozen(ctx, node, n)
        await asyncio.sleep(mode.warmup)
        t0 = window_start(time.time())
        t1 = t0 + mode.lag_window
        # Edges just before a tick boundary, when the node is idle: the ticks of [t0, t1) are
        # fired, run and finished between the two snapshots (as long as each second's burst is
        # done within ~0.8 s).
        await sleep_until(t0 - EDGE)
        before = await snapshot(ctx, node)
        node.profiling(True)
        await sleep_until(t1 - EDGE)
        node.profiling(False)
        after = await snapshot(ctx, node)
        await sleep_until(t1 + 2.0)
        settle_s = await settle(ctx, prefix, t0, t1)
    finally:
        await asyncio.to_thread(node.stop)
    await profile_report(ctx, node, f"lag_{n}")
    runs = await read_runs(ctx.etcd, prefix, PROJECT)
    await cleanup(ctx, node, prefix)

    in_window, missed, dupes, extra = tick_accounting(runs, jobs, t0, t1)
    ok = [r for r in in_window if r.status == "succeeded"]
    start_lag = [
        r.started_at - r.scheduled_at
        for r in ok
        if r.started_at is not None and r.scheduled_at is not None
    ]
    fire_lag = [r.created_at - r.scheduled_at for r in ok if r.scheduled_at is not None]
    claim_lag = [r.started_at - r.created_at for r in ok if r.started_at is not None]
    run_time = [
        r.finished_at - r.started_at
        for r in ok
        if r.finished_at is not None and r.started_at is not None
    ]
    nd = diff(after.node, before.node)
    expected = n * (t1 - t0)
    lag: dict[str, Any] = {
        "scenario": f"lag_{n}",
        "jobs": n,
        "rate_per_s": n,
        "capacity": mode.lag_capacity or "default",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "window_s": t1 - t0,
        "expected_ticks": expected,
        "runs_for_window_ticks": len(in_window),
        "succeeded": len(ok),
        "statuses": dict(Counter(r.status for r in in_window)),
        "sources": dict(Counter(r.source for r in in_window)),
        "missed_ticks": missed,
        "settle_s": settle_s,
        "window_t0": t0,
        "missed_per_s": missed_per_second(runs, jobs, t0, t1),
        "duplicate_ticks": dupes,
        "extra_runs": extra,
        "missed_ticks_metric": int(value(nd, "cronmesh_ticks_total", fate="missed")),
        "start_lag": summary_ms(start_lag),
        "fire_lag": summary_ms(fire_lag),
        "create_to_claim": summary_ms(claim_lag),
        "claim_to_finish": summary_ms(run_time),
        "start_lag_histogram": histogram_summary_ms(nd, "cronmesh_start_lag_seconds"),
        "fire_lag_histogram": histogram_summary_ms(nd, "cronmesh_fire_lag_seconds"),
        "spawn_histogram": histogram_summary_ms(nd, "cronmesh_spawn_seconds"),
        "claims": {k: int(v) for k, v in by_label(nd, "cronmesh_claims_total", "outcome").items()},
        "cpu": cpu_delta(before, after, len(ok)),
        "started_per_s": per_second(
            (r.started_at for r in ok if r.started_at is not None), t0, t1 + 1
        ),
        "start_lag_ms_sample": sample(start_lag),
        "worst_ticks": worst_ticks(ok),
    }
    if n != mode.lag_jobs:
        return {f"lag_{n}": lag}
    etcd = {"scenario": "etcd_per_run", "window_s": t1 - t0, **etcd_delta(before, after, len(ok))}
    cpu = {"scenario": "cpu_per_run", "window_s": t1 - t0, **lag["cpu"]}
    return {f"lag_{n}": lag, "etcd_per_run": etcd, "cpu_per_run": cpu}
