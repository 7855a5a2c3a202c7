"""Sharding the scheduling loop by job hash across several elections: a model, not built yet.

    python -m bench.shardsim [--cpu bench/results/cpu_per_run.json] [--sched ...]

Design (docs/benchmarks.md, "Beyond one leader"): the jobs are split into ``S`` shards by a hash
of ``project/job``; each shard has its own election key, and its leader plans and creates the
runs of that shard's jobs exactly as the single leader does today (fenced by its own election
revision). Each node ranks the shards by rendezvous hashing (highest ``hash(node, shard)``
first) and campaigns for a shard after a delay that grows with its rank, so shards spread over
the nodes and move as little as possible when a node leaves.

This module answers two questions with the per-run costs measured by ``bench.run``:

- placement: with ``N`` nodes and ``S`` shards, how many shards does the busiest node lead
  (balance), and what fraction of shards changes leader when one node dies (disruption);
- capacity: the highest rate at which no node and not etcd needs more than its cores, when a
  node spends ``leader_ms`` per run it creates and ``worker_ms`` per run it executes, workers
  share the runs evenly, and etcd spends ``etcd_ms`` per run on its own cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def score(node: str, shard: int) -> int:
    return int.from_bytes(hashlib.sha1(f"{node}/{shard}".encode()).digest()[:8], "big")


def leaders(nodes: list[str], shards: int) -> dict[int, str]:
    """Shard → the node that wins it when every node is up (the highest rendezvous score)."""
    return {s: max(nodes, key=lambda n: score(n, s)) for s in range(shards)}


@dataclass(frozen=True)
class Placement:
    nodes: int
    shards: int
    max_shards_per_node: int
    moved_when_one_dies: float  # mean fraction of shards whose leader changes


def placement(n_nodes: int, shards: int) -> Placement:
    nodes = [f"node-{i}" for i in range(n_nodes)]
    before = leaders(nodes, shards)
    counts: dict[str, int] = {}
    for node in before.values():
        counts[node] = counts.get(node, 0) + 1
    moved = 0.0
    if n_nodes > 1:
        for dead in nodes:
            after = leaders([n for n in nodes if n != dead], shards)
            moved += sum(1 for s in range(shards) if after[s] != before[s]) / shards
        moved /= n_nodes
    return Placement(n_nodes, shards, max(counts.values()), round(moved, 3))


def capacity(
    n_nodes: int,
    shards: int,
    *,
    leader_ms: float,
    worker_ms: float,
    etcd_ms: float,
    node_cores: float = 1.0,
    etcd_cores: float = 1.0,
) -> float:
    """Runs/s at which the busiest node or etcd reaches its cores (the others have room)."""
    p = placement(n_nodes, shards)
    # per run/s of total rate: the busiest node leads p.max_shards_per_node / shards of it and
    # executes 1 / n_nodes of it
    node_ms = leader_ms * p.max_shards_per_node / shards + worker_ms / n_nodes
    return round(min(node_cores * 1000 / node_ms, etcd_cores * 1000 / etcd_ms), 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.shardsim", description=__doc__)
    ap.add_argument(
        "--leader-ms", type=float, help="leader CPU per run created (default: measured)"
    )
    ap.add_argument("--worker-ms", type=float, help="worker CPU per run (default: measured)")
    ap.add_argument("--etcd-ms", type=float, help="etcd CPU per run (default: measured)")
    ap.add_argument("--etcd-cores", type=float, default=2.0)
    args = ap.parse_args(argv)
    measured = measured_costs()
    leader_ms = args.leader_ms or measured.get("leader_ms", 2.0)
    node_ms = measured.get("node_ms", 7.0)
    worker_ms = args.worker_ms or max(0.5, node_ms - leader_ms)
    etcd_ms = args.etcd_ms or measured.get("etcd_ms", 1.2)
    print(
        f"per run: leader {leader_ms:.2f} ms, worker {worker_ms:.2f} ms, etcd {etcd_ms:.2f} ms "
        f"(etcd on {args.etcd_cores:g} cores, one core per node)"
    )
    rows = []
    print(f"{'nodes':>5} {'shards':>6} {'max/node':>8} {'moved':>6} {'runs/s':>8}")
    for n in (1, 2, 4, 8, 16):
        for s in (1, 4, 16, 64):
            p = placement(n, s)
            rate = capacity(
                n,
                s,
                leader_ms=leader_ms,
                worker_ms=worker_ms,
                etcd_ms=etcd_ms,
                etcd_cores=args.etcd_cores,
            )
            rows.append({**p.__dict__, "runs_per_s": rate})
            print(f"{n:>5} {s:>6} {p.max_shards_per_node:>8} {p.moved_when_one_dies:>6} {rate:>8}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "costs_ms": {"leader": leader_ms, "worker": worker_ms, "etcd": etcd_ms},
        "etcd_cores": args.etcd_cores,
        "rows": rows,
    }
    (RESULTS / "shardsim.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


def measured_costs() -> dict[str, float]:
    """Per-run CPU from the latest bench.run results (cpu_per_run, scheduler_throughput)."""
    out: dict[str, float] = {}
    cpu = RESULTS / "cpu_per_run.json"
    if cpu.exists():
        d = json.loads(cpu.read_text())
        out["node_ms"], out["etcd_ms"] = d["node_ms_per_run"], d["etcd_ms_per_run"]
    sched = RESULTS / "scheduler_throughput.json"
    if sched.exists():
        levels = json.loads(sched.read_text())["levels"]
        per_run = [lv["cpu"]["node_ms_per_run"] for lv in levels if lv.get("keeps_up")]
        if per_run:
            out["leader_ms"] = min(per_run)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
