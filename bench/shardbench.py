"""Sharded scheduling measured with several node processes, beside the model's predictions.

    python -m bench.shardbench [--nodes 3] [--shards 1,8] [--jobs 200,600] [--window 15]

For each shard count K and each load (jobs every second, a selector no node matches: the runs
stay queued, so the nodes only lead, as in ``bench.run``'s scheduler scenario), ``--nodes`` fresh
``cronmesh node`` processes share one etcd. Once the shards sit where the rendezvous ranking puts
them, it measures over ``--window`` seconds:

- ticks/s the cluster fires (``cronmesh_ticks_total{fate=fired}`` summed over the nodes), and
  whether it keeps up (>= 99 % of the offered ticks, none missed);
- the busiest node's CPU per cluster tick (``/proc/<pid>/stat``), and its ratio to K = 1 at the
  same load, next to the model's busiest share (``bench.shardsim.shares``: bounded-load
  placement with the per-cluster loops on shard 0's node, D395);
- etcd's CPU per tick;
- the watch events each node decoded per cluster tick (``cronmesh_watch_events``, D348), in
  all and by the family of the key watched (``schedule-state``, ``active``, ``queue``, ...);
- then one shard's failover: SIGKILL of the leader of shard ``K - 1`` and the time until a new
  candidacy leads it (the lease TTL, 3 s, is the model's floor).

"Leader ms" is a node's CPU per cluster tick above what a node leading nothing spends (the K = 1
row's followers), plus the queue entries its worker did not decode because its own leader had
just encoded them (D352: a follower decodes every entry, a leader's worker takes its own runs
back): the node's fired ticks per cluster tick times one entry's decoding, timed here on the
window's own queue entries (``decode_ms_per_entry``). Without that term the K = 1 leader, whose
worker decodes none of the runs, was compared with less than its work (D481).

The machine's load average is written next to every number (the machine is shared). Results go
to ``bench/results/shardbench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench import shardsim
from bench.harness import (
    BenchEtcd,
    NodeProc,
    Samples,
    auth_headers,
    bench_etcd,
    by_label,
    parse_prom,
    proc_cpu,
    put_jobs,
    value,
)
from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import Run
from cluster.shard_store import set_shards, shard_leaders
from cluster.shards import election_name, leaders

RESULTS = Path(__file__).resolve().parent / "results"
LEASE_TTL = 3


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def fired(http: aiohttp.ClientSession, node: NodeProc) -> float:
    async with http.get(f"{node.url}/metrics") as r:
        return value(parse_prom(await r.text()), "cronmesh_ticks_total", fate="fired")


async def all_ready(http: aiohttp.ClientSession, nodes: list[NodeProc], within: float) -> None:
    deadline = time.monotonic() + within
    for node in nodes:
        while True:
            try:
                async with http.get(f"{node.url}/readyz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline or not node.alive():
                raise TimeoutError(f"{node!r} not ready; see {node.log_path}")
            await asyncio.sleep(0.2)


async def wait_placed(etcd: Etcd, keys: Keys, ids: list[str], shards: int, within: float) -> float:
    """Until every shard's leader is the one the ranking puts there (K = 1: any leader, as
    before sharding: the first node to campaign leads)."""
    t = time.monotonic()
    want = leaders(ids, shards)
    while time.monotonic() - t < within:
        now = await shard_leaders(etcd, keys, shards)
        if now == want or (shards == 1 and now[0] is not None):
            return time.monotonic() - t
        await asyncio.sleep(0.2)
    raise TimeoutError(f"shards not placed within {within}s")


async def level(
    args: argparse.Namespace, tmp: Path, etcd_server: BenchEtcd, shards: int, jobs: int
) -> dict[str, Any]:
    prefix = f"/bench-shard-{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    ids = [f"node-{i}" for i in range(args.nodes)]  # the model's names: the same placement
    async with Etcd([etcd_server.endpoint]) as etcd:
        await set_shards(etcd, keys, shards)
        nodes = [
            NodeProc(
                etcd=etcd_server.endpoint,
                prefix=prefix,
                node_id=i,
                data_dir=tmp / f"data-{prefix[1:]}-{i}",
                log_path=tmp / f"{prefix[1:]}-{i}.log",
                capacity=None,
                properties={"role": "bench"},
                lease_ttl=LEASE_TTL,
                profile=args.profile / f"k{shards}-j{jobs}-{i}.prof" if args.profile else None,
            )
            for i in ids
        ]
        try:
            async with aiohttp.ClientSession(headers=auth_headers()) as http:
                await all_ready(http, nodes, 90)
                placed_s = await wait_placed(etcd, keys, ids, shards, 90)
                placed = await shard_leaders(etcd, keys, shards)
                await put_jobs(http, nodes[0], "default", jobs, selector="role=none")
                await asyncio.sleep(args.warmup)
                e0 = (time.monotonic(), proc_cpu(etcd_server.pid).self_s)
                for n in nodes:
                    n.profiling(True)
                before = [await sample(http, n) for n in nodes]
                await asyncio.sleep(args.window)
                after = [await sample(http, n) for n in nodes]
                for n in nodes:
                    n.profiling(False)
                if args.profile:
                    await asyncio.sleep(3)  # the profiles are written before the failover kill
                e1 = (time.monotonic(), proc_cpu(etcd_server.pid).self_s)
                avg = load()
                decode_ms = await decode_cost(etcd, keys)
                failover = await kill_one(etcd, keys, nodes, shards)
        finally:
            for n in nodes:
                n.stop()
    # per node, rates over its own interval (fetching metrics takes a while on a busy machine)
    rates = [
        {k: (a[k] - b[k]) / (a["t"] - b["t"]) for k in ("fired", "missed", "cpu")}
        for a, b in zip(after, before, strict=True)
    ]
    tick_rate = sum(r["fired"] for r in rates)
    cpu_ms = [1000 * r["cpu"] / max(tick_rate, 1e-9) for r in rates]
    # watch events each node decoded per cluster tick, in all and by key area (D356)
    events = [
        {
            k.split(":", 1)[-1]: round((a[k] - b.get(k, 0.0)) / (a["t"] - b["t"]) / tick_rate, 2)
            for k in a
            if k.startswith("events") and a[k] != b.get(k, 0.0)
        }
        for a, b in zip(after, before, strict=True)
    ]
    led = [[s for s, n in placed.items() if n == i] for i in ids]
    # the runs each node's leader created (its worker took them back undecoded, D352)
    own = [r["fired"] / max(tick_rate, 1e-9) for r in rates]
    model = shardsim.shares(args.nodes, shards)
    return {
        "shards": shards,
        "nodes": args.nodes,
        "jobs": jobs,
        "placement_s": round(placed_s, 2),
        "ticks_per_s": round(tick_rate, 1),
        "missed_per_s": round(sum(r["missed"] for r in rates), 2),
        "keeps_up": tick_rate >= 0.99 * jobs and sum(r["missed"] for r in rates) == 0,
        "shards_led": led,
        "node_cpu_ms_per_tick": [round(c, 3) for c in cpu_ms],
        "node_events_per_tick": events,
        "node_fired_share": [round(x, 3) for x in own],
        "decode_ms_per_entry": round(decode_ms, 4),
        "busiest_node_cpu_ms_per_tick": round(max(cpu_ms), 3),
        "etcd_cpu_ms_per_tick": round(1000 * (e1[1] - e0[1]) / (e1[0] - e0[0]) / tick_rate, 3),
        "model_max_shards_per_node": max((len(x) for x in led), default=0),
        # the busiest node's share of a K = 1 leader's work, the per-cluster loops counted on
        # shard 0's node (D395), as placed now and as plain rendezvous placed it
        "model_busiest_share": model.balanced,
        "model_busiest_share_rendezvous": model.rendezvous,
        "failover_s": failover,
        "load_average": avg,
        # a node whose lease lapsed under load (its window's CPU and ticks are disturbed)
        "lease_lost": [i for i, n in zip(ids, nodes, strict=True) if lease_lost(n)],
    }


async def decode_cost(etcd: Etcd, keys: Keys, entries: int = 200, rounds: int = 5) -> float:
    """CPU ms to validate one of the queued runs' entries (what a follower's worker does once per
    run and a leader's worker skips for its own runs, D352): the window's own entries, the
    fastest of ``rounds`` passes (this process, the same code and machine as the nodes)."""
    res = await etcd.range(keys.queue(), limit=entries)
    values = [kv.value for kv in res.kvs]
    if not values:
        return 0.0
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        for v in values:
            Run.model_validate_json(v)
        best = min(best, time.process_time() - t)
        await asyncio.sleep(0)
    return 1000 * best / len(values)


async def sample(http: aiohttp.ClientSession, node: NodeProc) -> dict[str, float]:
    t = time.monotonic()
    cpu = proc_cpu(node.pid).self_s
    prom = await metrics_of(http, node)
    # per key family; the metric comes with D348 (absent from a node without it: no columns)
    areas = by_label(prom, "cronmesh_watch_events", "family")
    return {
        "t": t,
        "cpu": cpu,
        "fired": value(prom, "cronmesh_ticks_total", fate="fired"),
        "missed": value(prom, "cronmesh_ticks_total", fate="missed"),
        "events": sum(areas.values()),
        **{f"events:{a}": n for a, n in areas.items()},
    }


async def metrics_of(http: aiohttp.ClientSession, node: NodeProc, within: float = 30) -> Samples:
    """The node's metrics; a node that lost its lease under load answers 503 until it holds a new
    one: asked again until ``within`` (its window then says so: ``lease_lost`` in its log)."""
    deadline = time.monotonic() + within
    while True:
        async with http.get(f"{node.url}/metrics") as r:
            if r.status == 200:
                return parse_prom(await r.text())
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node!r}: /metrics answered {r.status}: {await r.text()}")
        await asyncio.sleep(0.5)


async def claims(
    args: argparse.Namespace, tmp: Path, etcd_server: BenchEtcd, handoff: float
) -> dict[str, Any]:
    """Claim hints (D41, D305): ``--claims`` runnable jobs every second on the nodes, with the
    default hand-off delay (a worker claims the runs hashed to it at once, others' after the
    delay) or 0 (every worker races for every queue entry). Claim transactions lost per run."""
    prefix = f"/bench-claims-{uuid.uuid4().hex[:8]}"
    ids = [f"node-{i}" for i in range(args.nodes)]
    os.environ["CRONMESH_HANDOFF_DELAY"] = str(handoff)
    try:
        nodes = [
            NodeProc(
                etcd=etcd_server.endpoint,
                prefix=prefix,
                node_id=i,
                data_dir=tmp / f"data-{prefix[1:]}-{i}",
                log_path=tmp / f"{prefix[1:]}-{i}.log",
                capacity=None,
                lease_ttl=LEASE_TTL,
            )
            for i in ids
        ]
    finally:
        os.environ.pop("CRONMESH_HANDOFF_DELAY", None)
    try:
        async with aiohttp.ClientSession(headers=auth_headers()) as http:
            await all_ready(http, nodes, 90)
            await put_jobs(http, nodes[0], "default", args.claims)
            await asyncio.sleep(args.warmup)
            before = [await samples(http, n) for n in nodes]
            c0 = sum(proc_cpu(n.pid).self_s for n in nodes)
            await asyncio.sleep(args.window)
            after = [await samples(http, n) for n in nodes]
            c1 = sum(proc_cpu(n.pid).self_s for n in nodes)
            avg = load()
    finally:
        for n in nodes:
            n.stop()

    def total(name: str, **labels: str) -> float:
        pairs = zip(after, before, strict=True)
        return sum(value(a, name, **labels) - value(b, name, **labels) for a, b in pairs)

    won = total("cronmesh_claims_total", outcome="won")
    lost = total("cronmesh_claims_total", outcome="lost_race")
    return {
        "jobs": args.claims,
        "handoff_delay_s": handoff,
        "runs_claimed": int(won),
        "lost_races_per_run": round(lost / max(won, 1), 3),
        "claimed_as_preferred": int(total("cronmesh_placement_claims_total", via="preferred")),
        "claimed_by_handoff": int(total("cronmesh_placement_claims_total", via="handoff")),
        "nodes_cpu_ms_per_run": round(1000 * (c1 - c0) / max(won, 1), 3),
        "load_average": avg,
    }


async def samples(http: aiohttp.ClientSession, node: NodeProc) -> Samples:
    async with http.get(f"{node.url}/metrics") as r:
        return parse_prom(await r.text())


async def kill_one(etcd: Etcd, keys: Keys, nodes: list[NodeProc], shards: int) -> dict[str, Any]:
    """SIGKILL the leader of the last shard; seconds until a new candidacy leads it."""
    shard = shards - 1
    prefix = keys.election(election_name(shard))
    res = await etcd.range(prefix, sort="create", limit=1)
    old = res.kvs[0]
    victim = next(n for n in nodes if n.node_id == old.value.decode())
    victim.proc.send_signal(signal.SIGKILL)
    t = time.monotonic()
    while time.monotonic() - t < 30:
        res = await etcd.range(prefix, sort="create", limit=1)
        if res.kvs and res.kvs[0].key != old.key:
            return {
                "shard": shard,
                "seconds": round(time.monotonic() - t, 2),
                "model_s": LEASE_TTL,
                "load_average": load(),
            }
        await asyncio.sleep(0.02)
    return {"shard": shard, "seconds": None, "model_s": LEASE_TTL, "load_average": load()}


def lease_lost(node: NodeProc) -> bool:
    try:
        return "lease lost" in node.log_path.read_text(errors="replace")
    except OSError:
        return False


def follower_cpu(row: dict[str, Any]) -> None:
    """What a node that leads nothing spends per tick (it watches the queue): K = 1's baseline."""
    pairs = zip(row["node_cpu_ms_per_tick"], row["shards_led"], strict=True)
    idle = [c for c, led in pairs if not led]
    row["follower_cpu_ms_per_tick"] = round(sum(idle) / len(idle), 3)


def leader_ms(row: dict[str, Any], follower: float) -> list[float]:
    """Each node's leader CPU per cluster tick: its CPU above a follower's, plus the decodings
    its worker was spared for the runs its own leader created (D481: like with like)."""
    d = row["decode_ms_per_entry"]
    pairs = zip(row["node_cpu_ms_per_tick"], row["node_fired_share"], strict=True)
    return [round(c - follower + d * own, 3) for c, own in pairs]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-shardbench-"))
    rows: list[dict[str, Any]] = []
    try:
        async with bench_etcd(tmp) as (etcd_server, _):
            for jobs in args.jobs:
                for shards in args.shards:
                    row = await level(args, tmp, etcd_server, shards, jobs)
                    base = next((r for r in rows if r["jobs"] == jobs and r["shards"] == 1), None)
                    if shards == 1 and args.nodes > 1:
                        base = row
                        follower_cpu(row)
                    if base is not None and "follower_cpu_ms_per_tick" in base:
                        follower = base["follower_cpu_ms_per_tick"]
                        leader = leader_ms(row, follower)
                        row["leader_cpu_ms_per_tick"] = leader
                        # the measure of the rounds before D481, for comparison
                        old = [round(c - follower, 3) for c in row["node_cpu_ms_per_tick"]]
                        row["leader_cpu_ms_per_tick_before_d481"] = old
                        if base is not row:
                            ratio = max(leader) / max(base["leader_cpu_ms_per_tick"])
                            row["busiest_leader_vs_k1"] = round(ratio, 3)
                            was = max(old) / max(base["leader_cpu_ms_per_tick_before_d481"])
                            row["busiest_leader_vs_k1_before_d481"] = round(was, 3)
                            row["goal_vs_k1"] = round(1.2 / min(shards, args.nodes), 3)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            claim_rows = []
            for handoff in (1.0, 0.0) if args.claims else ():
                claim_rows.append(await claims(args, tmp, etcd_server, handoff))
                print(json.dumps(claim_rows[-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": rows, "claims": claim_rows, "window_s": args.window, "lease_ttl": LEASE_TTL}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.shardbench", description=__doc__)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--shards", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    ap.add_argument("--jobs", type=lambda s: [int(x) for x in s.split(",")], default=[200, 600])
    ap.add_argument("--window", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--claims", type=int, default=100, help="runnable jobs for the claim phase")
    ap.add_argument(
        "--profile", type=Path, help="cProfile each node over the window into this folder (CPU x2)"
    )
    args = ap.parse_args(argv)
    out = asyncio.run(main_async(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "shardbench.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
