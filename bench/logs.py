"""Log benchmarks: shipping throughput (MB/s per node into S3) and live-tail delay.

    .venv/bin/python -m bench.logs [--quick] [--only shipping,live_tail,small_logs,big_follow]

Starts its own etcd, a SeaweedFS S3 server (127.0.0.1) and ``cronmesh node`` processes, prints
a summary and writes ``bench/results/logs.json``. Everything it started is stopped on exit.

- shipping: ``jobs`` runs at once on one node, each writing ``mb`` MiB of text lines as fast as it
  can. Measured: the capture rate (bytes the jobs wrote / time until every run finished) and the
  shipping rate (bytes of log objects in S3 / time until the last object was there), and the
  node's peak RSS (memory stays bounded while 100s of MiB pass through).
- small logs: jobs that print one line, fired by cron every second of a known window on one node;
  runs per second whose log object is in S3 (the "runs/s with logs shipped to S3" goal).
- big follow: one job writes 1 GiB (256 MiB with --quick) while clients follow it on its node
  and through another node, then the stored object is read through the API; the nodes' resident
  memory before and at peak (the goal: flat while a 1 GB log streams).
- live tail: a job on node A prints its own clock every 100 ms; clients follow it on A (direct)
  and on B (proxied through A). Delay = arrival at the client - time printed by the job.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import boto3
from botocore.config import Config

from bench.harness import (
    BenchEtcd,
    NodeProc,
    Procs,
    auth_headers,
    bench_etcd,
    machine_cpu,
    proc_cpu,
    put_jobs,
)
from bench.stats import summary_ms
from tests.seaweed import SeaweedS3

RESULTS = Path(__file__).resolve().parent / "results"
API = "/api/v1/projects/bench"


def s3_client(s3: SeaweedS3) -> Any:
    env = s3.env()
    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


async def wait_ready(http: aiohttp.ClientSession, node: NodeProc, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{node.url}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{node!r} not ready; see {node.log_path}")


async def trigger(http: aiohttp.ClientSession, url: str, job: dict[str, Any]) -> str:
    async with http.put(f"{url}{API}/jobs/{job['name']}", json=job) as r:
        assert r.status in (200, 201), await r.text()
    async with http.post(f"{url}{API}/jobs/{job['name']}/runs", json={}) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])


async def wait_finished(http: aiohttp.ClientSession, url: str, ids: list[str]) -> float:
    while True:
        states = []
        for run_id in ids:
            async with http.get(f"{url}{API}/runs/{run_id}") as r:
                states.append((await r.json())["status"])
        if all(s not in ("pending", "running") for s in states):
            assert all(s == "succeeded" for s in states), states
            return time.monotonic()
        await asyncio.sleep(0.05)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def start_node(
    procs: Procs, etcd: BenchEtcd, tmp: Path, prefix: str, node_id: str, **props: str
) -> NodeProc:
    node = NodeProc(
        etcd=etcd.endpoint,
        prefix=prefix,
        node_id=node_id,
        data_dir=tmp / "data",
        log_path=tmp / f"{node_id}.log",
        capacity=None,  # default settings
        properties=props,
    )
    procs.add(node)
    return node


def s3_nodes(
    procs: Procs,
    etcd: BenchEtcd,
    s3: SeaweedS3,
    tmp: Path,
    nodes: dict[str, dict[str, str]],
    extra_config: str = "",
) -> tuple[str, list[NodeProc]]:
    """A fresh bucket, and nodes on one fresh key prefix that ship their logs to it."""
    bucket = f"b{uuid.uuid4().hex[:10]}"
    s3_client(s3).create_bucket(Bucket=bucket)
    cfg = tmp / f"{bucket}.yaml"
    cfg.write_text(f"log_store: s3://{bucket}/bench\n{extra_config}")
    prefix = f"/bench-{uuid.uuid4().hex[:8]}"
    os.environ["CRONMESH_CONFIG"] = str(cfg)
    try:
        return bucket, [start_node(procs, etcd, tmp, prefix, n, **p) for n, p in nodes.items()]
    finally:
        del os.environ["CRONMESH_CONFIG"]


async def shipping(procs: Procs, etcd: BenchEtcd, s3: SeaweedS3, tmp: Path, quick: bool) -> Any:
    jobs, mb = (2, 16) if quick else (4, 48)
    cap = f"log_run_cap: {512 * 1024 * 1024}\n"
    bucket, (node,) = s3_nodes(procs, etcd, s3, tmp, {"ship": {}}, cap)
    line = "the quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    async with aiohttp.ClientSession(headers=auth_headers()) as http:
        await wait_ready(http, node)
        t0 = time.monotonic()
        ids = []
        for i in range(jobs):
            cmd = f"yes '{line}' | head -c {mb * 1024 * 1024}"
            ids.append(await trigger(http, node.url, {"name": f"flood{i}", "command": cmd}))
        t_runs = await wait_finished(http, node.url, ids)
        client = s3_client(s3)
        sizes: dict[str, int] = {}
        while len(sizes) < len(ids):
            for i, run_id in enumerate(ids):
                key = f"bench/bench/flood{i}/{run_id}/1.log"
                if key not in sizes:
                    try:
                        sizes[key] = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
                    except client.exceptions.ClientError:
                        pass
            await asyncio.sleep(0.05)
        t_objects = time.monotonic()
        rss = rss_mb(node.pid, "VmHWM")
    node.stop()
    procs.remove(node)
    written = jobs * mb * 1024 * 1024
    shipped = sum(sizes.values())
    return {
        "jobs": jobs,
        "mib_per_job": mb,
        "output_mib": round(written / 2**20, 1),
        "object_mib": round(shipped / 2**20, 1),
        "capture_mib_s": round(written / 2**20 / (t_runs - t0), 1),
        "shipping_mib_s": round(shipped / 2**20 / (t_objects - t0), 1),
        "upload_after_runs_s": round(t_objects - t_runs, 2),
        "node_peak_rss_mib": rss,
    }


async def small_logs(procs: Procs, etcd: BenchEtcd, s3: SeaweedS3, tmp: Path, quick: bool) -> Any:
    """Scheduled short runs that print one line each, logs in S3: ``rate`` jobs fire every second
    of a window of ``window`` seconds (a 6-field cron naming exactly those seconds, so the
    offered runs are known); measured, how many runs per second end with their log object in
    S3 (the "≥ 300 runs/s with logs shipped to S3" goal)."""
    rate, window = (150, 10) if quick else (300, 20)  # the goal is 300 runs/s
    bucket, (node,) = s3_nodes(procs, etcd, s3, tmp, {"small": {}})
    async with aiohttp.ClientSession(headers=auth_headers()) as http:
        await wait_ready(http, node)
        start = int(time.time()) + 10
        if start % 60 + window > 60:  # the window within one minute: one cron range
            start += 60 - start % 60
        first, last = time.gmtime(start), start + window - 1
        cron = f"{first.tm_sec}-{last % 60} {first.tm_min} {first.tm_hour} {first.tm_mday} "
        cron += f"{first.tm_mon} *"
        await put_jobs(
            http, node, "bench", rate, command="echo hello from $CRONMESH_RUN_ID", cron=cron
        )
        offered = rate * window
        client = s3_client(s3)

        in_pack: dict[str, int] = {}  # a pack never changes once written: read each once
        own: set[str] = set()  # logs in objects of their own
        segments: set[str] = set()  # segments seen (shipped while a run ran, deleted after)

        def count() -> int:
            """Runs whose log is in S3: own objects, and the members of packs (D440)."""
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix="bench/bench/"
            )
            n = 0
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith(".pack"):
                        if key not in in_pack:
                            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                            in_pack[key] = pack_members(body)
                        n += in_pack[key]
                    elif key.endswith(".log"):
                        n += 1
                        own.add(key)
                    elif ".log.parts/" in key:
                        segments.add(key)
            return n

        async def stored() -> int:
            """Logs the node has written to S3 (own objects and pack members), from its metrics:
            a listing of thousands of keys every second cost the S3 server ~1 s of CPU each
            (0.16 ms per key), more than the logs themselves; one listing checks at the end."""
            async with http.get(f"{node.url}/metrics") as r:
                text = await r.text()
            n = 0.0
            for line in text.splitlines():
                if line.startswith(
                    (
                        'cronmesh_log_uploads_total{kind="final",outcome="ok"}',
                        "cronmesh_log_packed_total",
                    )
                ):
                    n += float(line.rsplit(" ", 1)[1])
            return int(n)

        await asyncio.sleep(max(0.0, start - time.time()))
        pids = {"node": node.pid, "s3": s3.proc.pid, "etcd": etcd.server.proc.pid}  # type: ignore[union-attr]
        cpu0 = {k: proc_cpu(p) for k, p in pids.items()}
        machine0 = machine_cpu()
        deadline = start + window + 300
        last_n, t_done = -1, time.time()
        while (n := await stored()) < offered and time.time() < deadline:
            if n != last_n:
                last_n, t_done = n, time.time()
            elif time.time() - t_done > 15 and time.time() > start + window:
                break  # nothing new for 15 s: ticks the overloaded leader missed never run
            await asyncio.sleep(0.25)
        else:
            t_done = time.time()
        cpu1 = {k: proc_cpu(p) for k, p in pids.items()}
        machine1 = machine_cpu()
        load = os.getloadavg()
        in_s3 = await asyncio.to_thread(count)  # what the node says it wrote is there
    node.stop()
    procs.remove(node)
    return {
        "jobs": rate,
        "window_s": window,
        "offered": offered,
        "objects": in_s3,  # runs whose log is in S3 (own objects and pack members), listed
        "stored_by_metrics": n,
        "packs": len(in_pack),
        "own_objects": len(own),
        "segments_seen": len(segments),
        "last_object_after_window_s": round(t_done - (start + window), 2),
        "runs_with_log_in_s3_per_s": round(n / (t_done - start), 1),
        # CPU from the window's start until the last log was in S3, per run with its log there
        # (the S3 listing of this benchmark is in the S3 server's share)
        "cpu_ms_per_run": {
            **{k: round((cpu1[k].self_s - cpu0[k].self_s) / max(n, 1) * 1e3, 3) for k in pids},
            "node_kernel": round(
                (cpu1["node"].system_s - cpu0["node"].system_s) / max(n, 1) * 1e3, 3
            ),
            "jobs": round((cpu1["node"].children_s - cpu0["node"].children_s) / max(n, 1) * 1e3, 3),
        },
        "machine_busy": round((machine1[0] - machine0[0]) / (machine1[1] - machine0[1]), 2),
        "load_at_end": [round(x, 1) for x in load],
    }


def pack_members(body: bytes) -> int:
    """How many logs a pack holds: each is ``== <job>/<run>/<attempt> <length>`` then its text."""
    n = pos = 0
    while pos < len(body):
        end = body.index(b"\n", pos)
        length = int(body[pos:end].rsplit(b" ", 1)[1])
        pos, n = end + 1 + length, n + 1
    return n


async def live_tail(procs: Procs, etcd: BenchEtcd, s3: SeaweedS3, tmp: Path, quick: bool) -> Any:
    lines = 50 if quick else 150
    _, (a, b) = s3_nodes(procs, etcd, s3, tmp, {"tail-a": {"role": "runner"}, "tail-b": {}})
    delays: dict[str, list[float]] = {"direct": [], "proxied": []}

    async def follow(http: aiohttp.ClientSession, url: str, run_id: str, into: list[float]) -> None:
        pending = b""
        timeout = aiohttp.ClientTimeout(total=120)
        async with http.get(f"{url}{API}/runs/{run_id}/logs?follow=1", timeout=timeout) as r:
            async for chunk in r.content.iter_any():
                now = time.time()
                pending += chunk
                *done, pending = pending.split(b"\n")
                for raw in done:
                    _, stream, body = raw.decode().split(" ", 2)
                    if stream == "stdout":
                        into.append(now - float(body))

    async with aiohttp.ClientSession(headers=auth_headers()) as http:
        for n in (a, b):
            await wait_ready(http, n)
        cmd = f"for i in $(seq 1 {lines}); do date +%s.%N; sleep 0.1; done"
        job = {"name": "ticker", "command": cmd, "target": {"selector": "role=runner"}}
        run_id = await trigger(http, b.url, job)
        while True:  # follow from the start: wait until it runs
            async with http.get(f"{b.url}{API}/runs/{run_id}") as r:
                if (await r.json())["status"] != "pending":
                    break
            await asyncio.sleep(0.02)
        await asyncio.gather(
            follow(http, a.url, run_id, delays["direct"]),
            follow(http, b.url, run_id, delays["proxied"]),
        )
    for n in (a, b):
        n.stop()
        procs.remove(n)
    return {"lines": lines, **{k: summary_ms(v) for k, v in delays.items()}}


async def big_follow(procs: Procs, etcd: BenchEtcd, s3: SeaweedS3, tmp: Path, quick: bool) -> Any:
    """One job writes ``mib`` MiB while a client follows it on the running node and another
    follows it through a second node; then the stored object is read whole through the API.
    Measured: bytes each client got, their rates, and both nodes' memory (resident before the
    job, peak during it): the goal is a node's memory flat while it streams a 1 GB log."""
    mib = 256 if quick else 1024
    nodes = {"big-a": {"role": "runner"}, "big-b": {}}
    cap = f"log_run_cap: {2 * mib * 1024 * 1024}\n"
    bucket, (a, b) = s3_nodes(procs, etcd, s3, tmp, nodes, cap)
    got: dict[str, int] = {"direct": 0, "proxied": 0, "stored": 0}
    took: dict[str, float] = {}

    async def read(
        http: aiohttp.ClientSession, url: str, run_id: str, into: str, follow: bool
    ) -> None:
        t0 = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=900)
        query = "?follow=1" if follow else ""
        async with http.get(f"{url}{API}/runs/{run_id}/logs{query}", timeout=timeout) as r:
            assert r.status == 200, await r.text()
            async for chunk in r.content.iter_chunked(1 << 20):
                got[into] += len(chunk)
        took[into] = time.monotonic() - t0

    line = "the quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    async with aiohttp.ClientSession(headers=auth_headers()) as http:
        for n in (a, b):
            await wait_ready(http, n)
        before = {n.node_id: rss_mb(n.pid) for n in (a, b)}
        # a slow start, so both followers are attached before the flood
        cmd = f"sleep 1; yes '{line}' | head -c {mib * 1024 * 1024}"
        job = {"name": "big", "command": cmd, "target": {"selector": "role=runner"}}
        run_id = await trigger(http, b.url, job)
        await asyncio.gather(
            read(http, a.url, run_id, "direct", True), read(http, b.url, run_id, "proxied", True)
        )
        peak_following = {n.node_id: rss_mb(n.pid, "VmHWM") for n in (a, b)}
        key = f"bench/bench/big/{run_id}/1.log"
        client = s3_client(s3)
        while True:
            try:
                size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
                break
            except client.exceptions.ClientError:
                await asyncio.sleep(0.2)
        await read(http, b.url, run_id, "stored", False)
        peak = {n.node_id: rss_mb(n.pid, "VmHWM") for n in (a, b)}
    for n in (a, b):
        n.stop()
        procs.remove(n)
    return {
        "output_mib": mib,
        "object_mib": round(size / 2**20, 1),
        "received_mib": {k: round(v / 2**20, 1) for k, v in got.items()},
        "mib_per_s": {k: round(got[k] / 2**20 / took[k], 1) for k in took},
        "node_rss_before_mib": before,
        "node_peak_rss_following_mib": peak_following,
        "node_peak_rss_after_stored_read_mib": peak,
    }


async def amain(args: argparse.Namespace, procs: Procs, tmp: Path) -> int:
    async with bench_etcd(tmp, procs) as (etcd, _):
        s3 = SeaweedS3(tmp / "s3").start()
        procs.add(s3)
        for k, v in s3.env().items():
            os.environ[k] = v
        results: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpus": os.cpu_count(),
            "quick": args.quick,
        }
        for name, scenario in SCENARIOS.items():
            if not args.only or name in args.only:
                results[name] = await scenario(procs, etcd, s3, tmp, args.quick)
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / "logs.json"
        if args.only and out.exists():  # keep the other scenarios' latest results
            results = json.loads(out.read_text()) | results
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))
        return 0


SCENARIOS = {
    "shipping": shipping,
    "live_tail": live_tail,
    "small_logs": small_logs,
    "big_follow": big_follow,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.logs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only",
        type=lambda v: v.split(","),
        default=[],
        help=f"comma-separated scenarios of {', '.join(SCENARIOS)}",
    )
    args = parser.parse_args(argv)
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="cronmesh-bench-logs-") as tmp:
        try:
            return asyncio.run(amain(args, procs, Path(tmp)))
        finally:
            procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
