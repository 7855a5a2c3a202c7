"""Where the time goes at one end-to-end level: ``python -m bench.e2eprobe --jobs 400
[--window 10] [--rounds 2] [--tree NAME=PATH ...] [--no-freeze] [--sample S] [--spy PY_SPY]``.

One fresh etcd and one ``cronmesh node`` at DEFAULT settings per round and tree; ``--jobs`` jobs
every second running ``true``. The jobs are created while the cluster is frozen (``PUT
/api/v1/freeze``: every slot skipped) and the freeze is lifted once all exist, so the window does
not start behind by the runs fired while the API created the jobs (``--no-freeze``: as
``bench.run``'s end-to-end levels did before). Over the window it reports runs finished per
second, the queue's growth, the lag of the finished runs, and the CPU of the node's event-loop
thread apart from its other threads, of etcd, of the job processes and of the whole machine: a
loop thread near 1.0 core while the machine has idle time means the loop, not the CPU, is the cap.
It also reports the executions the node holds at the window's end by state (D465) — with
``--sample S``, every S s during the window too, with the node's RSS — and how the window's runs
got their cgroups (from the idle pool, made fresh, removed at their end: D464); the node's log
is kept as ``bench/results/e2eprobe-<tree>-<jobs>.log``.

``--tree NAME=PATH`` runs the node from another source tree (its ``cwd``: ``python -m
nodes.cli`` imports from there); several trees alternate within each round, the order swapped
every round, so A/B comparisons are taken in the same minutes. The load average before each
side is printed with it. Writes ``bench/results/e2eprobe.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import harness
from bench.harness import (
    NodeProc,
    Procs,
    auth_headers,
    bench_etcd,
    by_label,
    diff,
    put_jobs,
    sleep_until,
    value,
)
from bench.records import count, read_runs
from bench.scenarios import (
    PROJECT,
    Context,
    Mode,
    cpu_delta,
    new_prefix,
    put_jobs_frozen,
    snapshot,
)
from bench.stats import histogram_summary_ms, summary_ms

RESULTS = Path(__file__).resolve().parent / "results"
WARMUP = 3.0


def threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, the main thread as ``loop``, the others summed by
    name; ``NAME`` is user + system, ``NAME.sys`` the system part alone (time in the kernel does
    not hold the GIL: a process whose user time nears one core is bound by it)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            data = (task / "stat").read_bytes()
        except OSError:
            continue  # the thread ended meanwhile
        name = data[data.find(b"(") + 1 : data.rfind(b")")].decode(errors="replace")
        fields = data[data.rfind(b")") + 2 :].split()
        user, sys_ = int(fields[11]) / harness.CLK_TCK, int(fields[12]) / harness.CLK_TCK
        key = "loop" if task.name == str(pid) else name
        out[key] = out.get(key, 0.0) + user + sys_
        out[key + ".sys"] = out.get(key + ".sys", 0.0) + sys_
    return out


async def one_side(
    args: argparse.Namespace, procs: Procs, tmp: Path, name: str, root: Path
) -> dict[str, Any]:
    folder = tmp / f"{name}-{time.monotonic_ns()}"
    folder.mkdir()
    async with bench_etcd(folder, procs) as (etcd_server, etcd):
        saved_root = harness.ROOT
        harness.ROOT = root  # NodeProc runs `python -m nodes.cli` with this cwd
        extra_env = dict(e.split("=", 1) for e in args.side_env.get(name, []))
        saved_env = {k: os.environ.get(k) for k in extra_env}
        os.environ.update(extra_env)  # the node's environment is the bench's (node_env)
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=60), headers=auth_headers()
            ) as http:
                ctx = Context(etcd_server, etcd, http, folder, procs, Mode(quick=True))
                prefix = new_prefix("probe")
                node = NodeProc(
                    etcd=etcd_server.endpoint,
                    prefix=prefix,
                    node_id=f"probe-{name}",
                    data_dir=folder / "data",
                    log_path=folder / "node.log",
                    capacity=None,
                    profile=folder / "node.prof" if args.profile else None,
                )
                procs.add(node)
                try:
                    await node.wait_leading(http)
                    t = time.monotonic()
                    if args.freeze:
                        await put_jobs_frozen(ctx, node, args.jobs)
                    else:
                        await put_jobs(http, node, PROJECT, args.jobs)
                    create_s = time.monotonic() - t
                    await asyncio.sleep(WARMUP)
                    t0 = int(time.time()) + 1
                    t1 = t0 + args.window
                    await sleep_until(t0)
                    pool0 = await cgroup_pool(ctx, node)
                    before = await snapshot(ctx, node)
                    th0 = threads_cpu(node.pid)
                    q0 = await count(etcd, f"{prefix}/queue/")
                    node.profiling(True)
                    spy = sampler(args, node.pid, name, t1)
                    samples = await sample_states(ctx, node, t0, t1, args.sample)
                    node.profiling(False)
                    after = await snapshot(ctx, node)
                    pool1 = await cgroup_pool(ctx, node)
                    th1 = threads_cpu(node.pid)
                    q1 = await count(etcd, f"{prefix}/queue/")
                    if spy is not None:  # it ends at t1, then writes its file
                        await asyncio.to_thread(spy.wait, 30)
                finally:
                    await asyncio.to_thread(node.stop)
                    procs.remove(node)
                runs = await read_runs(etcd, prefix, PROJECT)
                RESULTS.mkdir(parents=True, exist_ok=True)  # the node's log, for a look after
                shutil.copyfile(folder / "node.log", RESULTS / f"e2eprobe-{name}-{args.jobs}.log")
                if node.profile is not None and node.profile.exists():
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(node.profile, RESULTS / f"e2eprobe-{name}-{args.jobs}.prof")
        finally:
            harness.ROOT = saved_root
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    seconds = after.wall - before.wall
    finished = [
        r
        for r in runs
        if r.status == "succeeded" and r.finished_at is not None and t0 <= r.finished_at < t1
    ]
    created = [r for r in runs if t0 <= r.created_at < t1]
    lag = [
        r.started_at - r.scheduled_at
        for r in finished
        if r.started_at is not None and r.scheduled_at is not None
    ]
    nd = diff(after.node, before.node)
    threads = {k: round((th1.get(k, 0.0) - v) / seconds, 3) for k, v in th0.items()}
    threads = {k: v for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v > 0.005}
    cpu = cpu_delta(before, after, len(finished))
    return {
        "tree": name,
        "root": str(root),
        "jobs": args.jobs,
        "env": extra_env,
        "freeze": args.freeze,
        "job_creation_s": round(create_s, 2),
        "window_s": args.window,
        "finished_per_s": round(len(finished) / args.window, 1),
        "created_per_s": round(len(created) / args.window, 1),
        "queue_start": q0,
        "queue_end": q1,
        "missed_ticks_metric": int(value(nd, "cronmesh_ticks_total", fate="missed")),
        "claims": {k: int(v) for k, v in by_label(nd, "cronmesh_claims_total", "outcome").items()},
        "placed_via": {
            k: int(v) for k, v in by_label(nd, "cronmesh_placement_claims_total", "via").items()
        },
        # spawn wall time (cronmesh_spawn_seconds: the hand-off to the cgroup-io pool, its queue,
        # the spawn itself and the move into the cgroup), armed spawns included
        "spawn": {
            "mean_ms": round(
                value(nd, "cronmesh_spawn_seconds_sum")
                / max(1.0, value(nd, "cronmesh_spawn_seconds_count"))
                * 1000,
                2,
            ),
            **histogram_summary_ms(nd, "cronmesh_spawn_seconds"),
        },
        # executions the worker holds (armed ahead + waiting for a seat + running) at the end
        "executions_at_end": int(value(after.node, "cronmesh_running_runs")),
        # ... by state (cronmesh_executions, D464; absent on trees before it), and sampled
        "executions_by_state": {
            k: int(v) for k, v in by_label(after.node, "cronmesh_executions", "state").items() if v
        },
        "executions_sampled": samples,
        # how the window's runs got their cgroups: from the idle pool (reused), fresh (made), and
        # how many ended ones were removed rather than kept (dropped; D340), idle ones given back
        # (trimmed; D487)
        "cgroup_pool": {k: pool1.get(k, 0) - pool0.get(k, 0) for k in pool1},
        "lag_of_finished": summary_ms(lag),
        "cores": {
            "node": cpu["node_cores"],
            "node_threads": threads,
            "etcd": cpu["etcd_cores"],
            "jobs": round(cpu["job_processes_cpu_s"] / seconds, 3),
            "machine_busy_fraction": cpu["machine_busy_fraction"],
        },
        "cpu": cpu,
    }


async def cgroup_pool(ctx: Context, node: NodeProc) -> dict[str, int]:
    async with ctx.http.get(f"{node.url}/status") as resp:
        pool = (await resp.json())["node"]["containment"].get("pool") or {}
    return {k: pool[k] for k in ("reused", "made", "dropped", "trimmed") if k in pool}


def sampler(
    args: argparse.Namespace, pid: int, name: str, t1: float
) -> subprocess.Popen[bytes] | None:
    """With ``--spy PY_SPY``: py-spy samples the node's threads (100 Hz, not holding it) until
    ``t1``, into ``bench/results/e2eprobe-<tree>-<jobs>.spy`` (folded stacks, one line per
    stack with its thread and its count; ``bench.spysummary`` reads them)."""
    if not args.spy:
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"e2eprobe-{name}-{args.jobs}.spy"
    seconds = max(1, round(t1 - time.time()))
    cmd = [args.spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "100", "--threads"]
    cmd += ["--nonblocking", "--format", "raw", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def sample_states(
    ctx: Context, node: NodeProc, t0: float, t1: float, every: float
) -> list[dict[str, Any]]:
    """Until ``t1``: every ``every`` s (0: never), the executions the node holds by state."""
    out: list[dict[str, Any]] = []
    while every > 0 and time.time() + every < t1:
        await asyncio.sleep(every)
        async with ctx.http.get(f"{node.url}/metrics") as resp:
            samples = harness.parse_prom(await resp.text())
        states = by_label(samples, "cronmesh_executions", "state")
        out.append(
            {
                "t": round(time.time() - t0, 2),
                "total": int(value(samples, "cronmesh_running_runs")),
                "rss_mb": rss_mb(node.pid),
                **{k: int(v) for k, v in states.items() if v},
            }
        )
    await sleep_until(t1)
    return out


def apscheduler_side(args: argparse.Namespace, procs: Procs, tmp: Path) -> dict[str, Any]:
    """The same jobs on APScheduler 3's memory store (each notes its start, then runs ``sh -c
    true``): started per second over the same window."""
    from bench.peers import runner
    from bench.peers.env import peers_python

    peer = runner.APSchedulerPeer(peers_python(), tmp, procs, "memory")
    doc = runner.periodic_level(peer, runner.Mode(quick=True), args.jobs, args.window, print)
    doc["tree"] = "apscheduler-memory"
    return doc


def brief(doc: dict[str, Any]) -> str:
    lag = doc["lag_of_finished"]
    c = doc["cores"]
    loop = c["node_threads"].get("loop")
    return (
        f"{doc['tree']}: {doc['finished_per_s']}/s finished of {doc['jobs']} "
        f"(created {doc['created_per_s']}/s), queue {doc['queue_start']} -> {doc['queue_end']}, "
        f"lag p50/p99 {lag.get('p50_ms')}/{lag.get('p99_ms')} ms; cores: node {c['node']} "
        f"(loop {loop}), etcd {c['etcd']}, jobs {c['jobs']}, machine busy "
        f"{c['machine_busy_fraction']}; node ms/run {doc['cpu']['node_ms_per_run']}, "
        f"etcd {doc['cpu']['etcd_ms_per_run']}; executions held at end "
        f"{doc['executions_at_end']} {doc['executions_by_state']}, claims {doc['claims']}, "
        f"via {doc['placed_via']}; cgroups {doc['cgroup_pool']}; "
        f"spawn mean {doc['spawn']['mean_ms']} ms p50/p99 {doc['spawn'].get('p50_ms')}/"
        f"{doc['spawn'].get('p99_ms')} ms; "
        f"load {doc['load_average_before']}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.e2eprobe", description=__doc__)
    ap.add_argument("--jobs", type=int, default=400, help="jobs every second (= runs/s offered)")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--tree",
        action="append",
        default=[],
        help="NAME=PATH: run the node from this source tree (repeat to alternate trees)",
    )
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        help="NAME:KEY=VALUE: set KEY in the environment of tree NAME's node (repeatable; for "
        "experiments such as NAME:CRONMESH_CAPACITY=512 — no longer default settings)",
    )
    ap.add_argument("--no-freeze", dest="freeze", action="store_false")
    ap.add_argument(
        "--sample",
        type=float,
        default=0.0,
        help="every SAMPLE s of the window, read the node's executions by state (one scrape "
        "each: costs the node a little)",
    )
    ap.add_argument(
        "--apscheduler",
        action="store_true",
        help="each round also runs the same jobs on APScheduler 3's memory store (bench.peers)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the node's loop thread over the window (bench/results/e2eprobe-*.prof; "
        "slows the node: read shares, not rates)",
    )
    ap.add_argument(
        "--spy",
        default="",
        help="PY_SPY: the py-spy binary; samples the node's threads over the window "
        "(bench/results/e2eprobe-*.spy; costs the node little, unlike --profile)",
    )
    args = ap.parse_args(argv)
    args.side_env = {}
    for spec in args.env:
        side, _, kv = spec.partition(":")
        args.side_env.setdefault(side, []).append(kv)
    trees = harness.trees(args.tree)
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-e2eprobe-"))
    docs: list[dict[str, Any]] = []
    try:
        for i in range(args.rounds):
            sides: list[tuple[str, Path | None]] = [*trees]
            if args.apscheduler:
                sides.append(("apscheduler-memory", None))
            for name, root in sides if i % 2 == 0 else sides[::-1]:
                load = [round(x, 2) for x in os.getloadavg()]
                if root is None:
                    doc = apscheduler_side(args, procs, tmp)
                    doc.update(round=i + 1, load_average_before=load)
                    docs.append(doc)
                    print(
                        f"round {i + 1} {name}: {doc['started_per_s']}/s started of {args.jobs},"
                        f" lag p50/p99 {doc['start_lag'].get('p50_ms')}/"
                        f"{doc['start_lag'].get('p99_ms')} ms, CPU {doc['cpu']['ms_per_run']} ms"
                        f"/run, {doc['missed_ticks']} ticks missed; load {load}",
                        flush=True,
                    )
                    continue
                doc = asyncio.run(one_side(args, procs, tmp, name, root))
                doc["round"] = i + 1
                doc["load_average_before"] = load
                docs.append(doc)
                print(f"round {i + 1} {brief(doc)}", flush=True)
                print(f"    threads (cores): {doc['cores']['node_threads']}", flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "e2eprobe.json"
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    out.write_text(json.dumps({"date": stamp, "rounds": docs}, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
