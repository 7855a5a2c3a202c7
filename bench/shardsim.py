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
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# the per-cluster loops' share of a K = 1 leader's work (shard 0's leader runs them); the same
# constant as cluster.shards.SINGLETONS_SHARE (measured: docs/benchmarks.md, 2026-12-07)
SINGLETONS = 0.3

# fitted to the 2026-12-07 tables: first (D430) to the third round's profiles, fixed 0.2 and
# plans 8 % dearer; then (D483) to 36 node rows of the fourth round under the measure of D481: a
# node leading any shard spends ~0.12 of a K = 1 leader's work whatever it leads (fixed; 0.09-0.16
# by tree, the fit separates it from the loops by one node a round), the loops ~0.2, a shard's
# ticks ~18 % dearer than a K = 1 leader's. Both fits predict the busiest node alike (0.56, 0.53).
FITTED = {"singletons": 0.2, "fixed": 0.12, "per_plan": 0.18}


def singleton_weight(shards: int, share: float = SINGLETONS) -> int:
    """Shard 0 in shards' worth of work: itself plus the per-cluster loops (D395)."""
    if shards <= 1:
        return 1
    return max(2, 1 + round(share * shards / (1 - share)))


def score(node: str, shard: int) -> int:
    return int.from_bytes(hashlib.sha1(f"{node}/{shard}".encode()).digest()[:8], "big")


def leaders(nodes: list[str], shards: int, *, balanced: bool = True) -> dict[int, str]:
    """Shard → the node that wins it when every node is up. Balanced (the product since D395):
    the (node, shard) pairs from the highest score down, each node up to its fair share of
    the shards' weights (shard 0 weighs ``singleton_weight``: it runs the per-cluster loops,
    D395); else the highest score alone (before D395: 8 shards over 3 nodes could lead 4/4/0)."""
    if not balanced:
        return {s: max(nodes, key=lambda n: score(n, s)) for s in range(shards)}
    weight = [singleton_weight(shards) if s == 0 else 1 for s in range(shards)]
    won = {0: min(nodes, key=lambda n: (-score(n, 0), n))}  # the heaviest first (D395)
    fair = -(-sum(weight) // len(nodes))
    cap = {n: fair for n in nodes}
    if weight[0] >= fair and len(nodes) > 1:  # shard 0 alone on its node, the rest even
        rest = -(-(shards - 1) // (len(nodes) - 1))
        cap = {n: weight[0] if n == won[0] else rest for n in nodes}
    load = {n: 0 for n in nodes}
    load[won[0]] += weight[0]
    for _, node, s in sorted((-score(n, s), n, s) for n in nodes for s in range(1, shards)):
        if s not in won and load[node] + weight[s] <= cap[node]:
            won[s] = node
            load[node] += weight[s]
    for s in range(shards):
        if s not in won:
            node = min(sorted(nodes), key=lambda n: (load[n], -score(n, s), n))
            won[s] = node
            load[node] += weight[s]
    return dict(sorted(won.items()))


def busiest_share(owner: dict[int, str], shards: int, singletons: float = SINGLETONS) -> float:
    """The busiest node's share of a K = 1 leader's work: each shard ``(1 - singletons) / K``,
    the per-cluster loops ``singletons`` on shard 0's node."""
    work: dict[str, float] = {}
    for s, node in owner.items():
        own = (1 - singletons) / shards + (singletons if s == 0 else 0)
        work[node] = work.get(node, 0.0) + own
    return round(max(work.values()), 3)


@dataclass(frozen=True)
class Shares:
    """The busiest node's share of a K = 1 leader's work by the highest score alone and balanced
    (D395, shard 0 weighing the loops), with the per-cluster loops on shard 0's node."""

    nodes: int
    shards: int
    singletons: float
    goal: float  # 1.2 / min(K, N)
    rendezvous: float
    balanced: float


def shares(n_nodes: int, shards: int, singletons: float = SINGLETONS) -> Shares:
    nodes = [f"node-{i}" for i in range(n_nodes)]
    return Shares(
        n_nodes,
        shards,
        singletons,
        round(1.2 / min(shards, n_nodes), 3),
        busiest_share(leaders(nodes, shards, balanced=False), shards, singletons),
        busiest_share(leaders(nodes, shards), shards, singletons),
    )


def bench_jobs(jobs: int, shards: int) -> list[int]:
    """Jobs per shard for ``bench.shardbench``'s job names (``default/j00000``...), by the
    product's hash (``cluster.shards.shard_of``)."""
    counts = [0] * shards
    for i in range(jobs):
        key = f"default/j{i:05d}".encode()
        counts[int.from_bytes(hashlib.sha1(key).digest()[:8], "big") % shards] += 1
    return counts


def node_loads(
    owner: dict[int, str],
    counts: list[int],
    *,
    singletons: float = SINGLETONS,
    fixed: float = 0.0,
    per_plan: float = 0.0,
) -> dict[str, float]:
    """Each node's leader work as a share of a K = 1 leader's, with the shards' real job counts
    (D430): ``fixed`` for each node that leads a shard at all, as the K = 1 leader pays it too
    (its shared watches take every job's schedule-state and active events, its rule caches, its
    tick loops), the per-cluster loops (``singletons``) on shard 0's node, and the rest of a
    K = 1 leader's work split by ticks, times ``1 + per_plan`` (a shard's smaller batches)."""
    total = max(1, sum(counts))
    per_tick = (1 - singletons - fixed) * (1 + per_plan if len(counts) > 1 else 1)
    load: dict[str, float] = {}
    for s, node in owner.items():
        work = per_tick * counts[s] / total
        load[node] = load.get(node, fixed) + work + (singletons if s == 0 else 0.0)
    return load


def best_by_work(nodes: list[str], counts: list[int], **cost: float) -> dict[int, str]:
    """The placement that weighs each shard's jobs and minimises the busiest node's load (every
    assignment tried up to 3^10; beyond, the heaviest shard first to the least loaded node):
    the most any work-weighted placement could give (D430)."""
    shards = len(counts)
    if len(nodes) ** shards <= 3**10:
        best: dict[int, str] = {}
        top = float("inf")
        for pick in itertools.product(nodes, repeat=shards):
            owner = dict(enumerate(pick))
            worst = max(node_loads(owner, counts, **cost).values())
            if worst < top - 1e-12:
                best, top = owner, worst
        return best
    owner: dict[int, str] = {}
    for s in sorted(range(shards), key=lambda s: (s != 0, -counts[s], s)):
        loads = node_loads(owner, counts, **cost)
        owner[s] = min(nodes, key=lambda n: (loads.get(n, 0.0), n))
    return owner


@dataclass(frozen=True)
class WorkShares:
    """The busiest node's share of a K = 1 leader's work for ``jobs`` of the bench's names: as
    the product places shards (by count, D395) and as the best work-weighted placement would."""

    nodes: int
    shards: int
    jobs: int
    busiest_jobs_share: float  # of the ticks, on the node with the most, as placed (D395)
    by_count: float
    by_work: float


def work_shares(n_nodes: int, shards: int, jobs: int, **cost: float) -> WorkShares:
    nodes = [f"node-{i}" for i in range(n_nodes)]
    counts = bench_jobs(jobs, shards)
    placed = leaders(nodes, shards)
    ticks: dict[str, int] = {}
    for s, node in placed.items():
        ticks[node] = ticks.get(node, 0) + counts[s]
    by_work = node_loads(best_by_work(nodes, counts, **cost), counts, **cost)
    return WorkShares(
        n_nodes,
        shards,
        jobs,
        round(max(ticks.values()) / max(1, jobs), 3),
        round(max(node_loads(placed, counts, **cost).values()), 3),
        round(max(by_work.values()), 3),
    )


@dataclass(frozen=True)
class Placement:
    nodes: int
    shards: int
    max_shards_per_node: int
    moved_when_one_dies: float  # mean fraction of shards whose leader changes


def placement(n_nodes: int, shards: int, *, balanced: bool = True) -> Placement:
    nodes = [f"node-{i}" for i in range(n_nodes)]
    before = leaders(nodes, shards, balanced=balanced)
    counts: dict[str, int] = {}
    for node in before.values():
        counts[node] = counts.get(node, 0) + 1
    moved = 0.0
    if n_nodes > 1:
        for dead in nodes:
            after = leaders([n for n in nodes if n != dead], shards, balanced=balanced)
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
    for n, k in ((3, 8), (3, 16), (5, 16)):
        b, r = placement(n, k), placement(n, k, balanced=False)
        print(
            f"{n} nodes, {k} shards: busiest leads {b.max_shards_per_node}/{k} balanced "
            f"(D395; {b.moved_when_one_dies} move when one dies), {r.max_shards_per_node}/{k} by "
            f"score alone ({r.moved_when_one_dies})"
        )
    print(f"busiest node's share of a K = 1 leader (per-cluster loops {SINGLETONS:g} of it):")
    for n, k in ((3, 8), (3, 16), (4, 8), (5, 16)):
        sh = shares(n, k)
        print(
            f"{n} nodes, {k} shards: goal {sh.goal}, balanced {sh.balanced}, "
            f"by score alone {sh.rendezvous}"
        )
    print("with the bench's job names (D430): busiest node, placed by count vs by work")
    for cost in ({}, FITTED):
        for k, jobs in ((8, 100), (8, 300), (16, 100), (16, 300)):
            w = work_shares(3, k, jobs, **cost)
            print(
                f"3 nodes, {k} shards, {jobs} jobs {cost or ''}: busiest node has "
                f"{w.busiest_jobs_share:.0%} of the ticks; by count {w.by_count}, "
                f"by work at best {w.by_work}"
            )
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
