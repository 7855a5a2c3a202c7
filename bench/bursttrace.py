"""A same-second burst on one default node, as a timeline (issue 23, the burst rows; D460).

    python -m bench.bursttrace --jobs 1000 --repeat 2 [--profile OUT] [--tree NAME=PATH ...]

Like ``bench.run --only burst``: ``jobs`` jobs, created frozen (D388), whose one tick is the same
instant, on a fresh node at default settings. Said per burst: when the runs were created,
started (an armed run: its release; any other: its claim, the record's ``started_at``) and
finished, per 100 ms after the instant; the node's CPU by thread, etcd's, and the machine's,
from 0.5 s before the instant to the last start and from there to the last end; the node's
claim and spawn counters. ``--profile OUT`` runs the node under cProfile (``bench.profnode``,
the loop thread's CPU) from 0.5 s before the instant until no run is left queued, and writes
OUT.<tree>.<n>.<round>.prof. ``--tree`` runs the same burst from several trees in turn (each
tree's own ``nodes``: ``git archive main | tar -x -C /tmp/x`` gives main's), the order swapped
every round, for an A/B.
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
from pathlib import Path
from typing import Any


def buckets(times: list[float], step: float, end: float) -> list[int]:
    """How many of ``times`` (s after the instant) are at or before each step's end."""
    out, i, ordered = [], 0, sorted(times)
    t = step
    while t < end + step:
        while i < len(ordered) and ordered[i] <= t:
            i += 1
        out.append(i)
        t = round(t + step, 6)
    return out


async def one(n: int, profile: str | None) -> dict[str, Any]:
    """One burst in this process's tree (run as a child per tree by :func:`main`)."""
    import aiohttp

    from bench.burst_failover import next_at_second
    from bench.e2eprobe import threads_cpu
    from bench.harness import (
        Procs,
        auth_headers,
        bench_etcd,
        by_label,
        diff,
        machine_cpu,
        parse_prom,
        proc_cpu,
        value,
    )
    from bench.records import count, read_runs
    from bench.scenarios import PROJECT, Context, Mode, new_prefix, node_proc, put_jobs_frozen
    from bench.stats import histogram_summary_ms, summary_ms

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-bursttrace-"))
    try:
        async with bench_etcd(tmp, procs) as (etcd_server, etcd):
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(timeout=timeout, headers=auth_headers()) as http:
                mode = Mode(quick=True, profile=profile is not None)
                ctx = Context(etcd_server, etcd, http, tmp, procs, mode)
                prefix = new_prefix(f"trace{n}")
                node = node_proc(ctx, prefix, f"trace-{n}", capacity=None, properties={})
                await node.wait_leading(http)
                second = int(time.time() + n * 0.006 + 8) % 60
                t = time.monotonic()
                await put_jobs_frozen(ctx, node, n, cron=f"{second} * * * * *")
                create_s = time.monotonic() - t
                due = next_at_second(time.time() + 3, second)
                await asyncio.sleep(max(0.0, due - 0.5 - time.time()))

                async def metrics() -> str:
                    async with http.get(f"{node.url}/metrics") as resp:
                        return await resp.text()

                m0 = await metrics()
                c0 = (threads_cpu(node.pid), proc_cpu(etcd_server.pid), machine_cpu())
                load0 = os.getloadavg()[0]
                node.profiling(True)
                queued_gone: float | None = None
                while time.time() < due + 60:
                    await asyncio.sleep(0.05)
                    if time.time() > due and await count(etcd, f"{prefix}/queue/") == 0:
                        queued_gone = time.time() - due
                        break
                node.profiling(False)
                c1 = (threads_cpu(node.pid), proc_cpu(etcd_server.pid), machine_cpu())
                t1 = time.time()
                while time.time() < due + 120:
                    await asyncio.sleep(0.2)
                    if await count(etcd, f"{prefix}/active/") == 0:
                        break
                m2 = await metrics()
                c2 = (threads_cpu(node.pid), proc_cpu(etcd_server.pid), machine_cpu())
                t2 = time.time()
                await asyncio.to_thread(node.stop)
                if profile and node.profile is not None and node.profile.exists():
                    shutil.copyfile(node.profile, profile)
                runs = [r for r in await read_runs(etcd, prefix, PROJECT) if r.scheduled_at == due]
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    started = sorted(r.started_at - due for r in runs if r.started_at is not None)
    created = sorted(r.created_at - due for r in runs)
    finished = sorted(r.finished_at - due for r in runs if r.finished_at is not None)
    last = started[-1] if started else 0.0

    def cpu(a: tuple[Any, ...], b: tuple[Any, ...]) -> dict[str, Any]:
        threads = {k: round(b[0].get(k, 0.0) - a[0].get(k, 0.0), 3) for k in b[0]}
        busy = b[2][0] - a[2][0]
        return {
            "node_threads_s": {k: v for k, v in sorted(threads.items()) if v > 0},
            "etcd_s": round(b[1].self_s - a[1].self_s, 3),
            "machine_busy_s": round(busy, 3),
        }

    d = diff(parse_prom(m2), parse_prom(m0))
    per_job: dict[str, int] = {}
    for r in runs:
        per_job[r.job] = per_job.get(r.job, 0) + 1
    return {
        "jobs": n,
        "load_before": round(load0, 2),
        "job_creation_s": round(create_s, 1),
        "runs": len(runs),
        "missed": n - len(per_job),
        "duplicates": sum(1 for c in per_job.values() if c > 1),
        "all_created_s": round(created[-1], 3) if created else None,
        "all_started_s": round(last, 3) if len(started) == n else None,
        "all_finished_s": round(finished[-1], 3) if len(finished) == n else None,
        "queue_empty_s": round(queued_gone, 3) if queued_gone is not None else None,
        "start_offset": summary_ms(started),
        "every_100ms": {
            "created": buckets(created, 0.1, last),
            "started": buckets(started, 0.1, last),
            "finished": buckets(finished, 0.1, last),
        },
        "cpu_to_queue_empty": cpu(c0, c1) | {"wall_s": round(t1 - (due - 0.5), 3)},
        "cpu_after": cpu(c1, c2) | {"wall_s": round(t2 - t1, 3)},
        "claims": by_label(d, "cronmesh_claims_total", "result"),
        "spawn_count": value(d, "cronmesh_spawn_seconds_count"),
        # the spawn's hand-off, its wait for a cgroup-io thread included
        "spawn": histogram_summary_ms(d, "cronmesh_spawn_seconds"),
    }


def brief(tree: str, doc: dict[str, Any]) -> str:
    c = doc["cpu_to_queue_empty"]
    th = c["node_threads_s"]
    pool = sum(v for k, v in th.items() if k != "loop" and not k.endswith(".sys"))
    return (
        f"{tree:>6} n={doc['jobs']} load {doc['load_before']:.1f}: all started "
        f"{doc['all_started_s']} s (p50 {doc['start_offset'].get('p50_ms')} ms), created by "
        f"{doc['all_created_s']} s, finished by {doc['all_finished_s']} s, missed "
        f"{doc['missed']}, dup {doc['duplicates']}; to queue empty ({c['wall_s']} s): loop "
        f"{th.get('loop', 0):.2f} s, threads {pool:.2f} s, "
        f"etcd {c['etcd_s']:.2f} s, machine {c['machine_busy_s']:.2f} s"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bursttrace", description=__doc__)
    ap.add_argument("--jobs", default="1000", help="comma-separated burst sizes")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", default=None, help="OUT: cProfile the node (see above)")
    ap.add_argument("--tree", action="append", default=[], help="NAME=PATH (default: this one)")
    ap.add_argument("--out", default=None, help="write every burst's document here (JSON)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        doc = asyncio.run(one(int(args.jobs), args.profile))
        print(json.dumps(doc))
        return 0
    from bench.harness import trees as parse_trees  # this tree's; each burst imports its own

    trees = parse_trees(args.tree)
    docs: list[dict[str, Any]] = []
    for rnd in range(args.repeat):
        order = trees if rnd % 2 == 0 else trees[::-1]
        for n in [int(x) for x in args.jobs.split(",")]:
            for name, path in order:
                prof = f"{args.profile}.{name}.{n}.{rnd}.prof" if args.profile else None
                cmd = [sys.executable, "-m", "bench.bursttrace", "--one", "--jobs", str(n)]
                if prof:
                    cmd += ["--profile", prof]
                env = dict(os.environ, PYTHONPATH=str(path))  # the tree's nodes and bench
                out = subprocess.run(
                    cmd, cwd=path, env=env, capture_output=True, text=True, check=False
                )
                if out.returncode != 0:
                    print(f"{name} n={n}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
                    continue
                doc = json.loads(out.stdout.strip().splitlines()[-1])
                doc |= {"tree": name, "round": rnd, "at": time.strftime("%H:%M:%S")}
                docs.append(doc)
                print(f"[{doc['at']}] " + brief(name, doc), flush=True)
                if args.out:  # after each burst: a long series interrupted keeps what it had
                    Path(args.out).write_text(json.dumps(docs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
