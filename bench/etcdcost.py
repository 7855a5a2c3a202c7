"""What an etcd write costs by its shape, and what a run's etcd paths cost the node in Python:
``python -m bench.etcdcost [--txns 1500] [--rounds 2]``.

- **etcd**: a fresh etcd (as the benchmarks start it: fsync on), one client sending
  transactions one after the other, each shape ``--txns`` times; etcd's CPU (``/proc``) per
  transaction. The differences between shapes give the cost of one more operation in a
  transaction against the cost of one more transaction (D350).
- **node**: the pure paths a trivial run takes through ``cluster.runs`` on this tree — building
  its creation, reading its queue entry back as the worker does, building its completion — in µs
  per run (best of 5 rounds of 3,000; D351, D352).

Prints both; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import bench_etcd, proc_cpu
from cluster.etcd import Op
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import Job, Run
from cluster.runs import RunOps, queued_run

RECORD = b"x" * 1300  # about a trivial run's record (1.1-1.3 KB)
SMALL = b"pending"

SHAPES: list[tuple[str, Callable[[int], list[Any]]]] = [
    ("1 put of 7 B", lambda i: [Op.put(f"/c/{i}", SMALL)]),
    ("20 puts of 7 B", lambda i: [Op.put(f"/d/{i}/{j}", SMALL) for j in range(20)]),
    ("40 puts of 7 B", lambda i: [Op.put(f"/b/{i}/{j}", SMALL) for j in range(40)]),
    ("40 puts of 1.3 KB", lambda i: [Op.put(f"/a/{i}/{j}", RECORD) for j in range(40)]),
    ("40 deletes of absent keys", lambda i: [Op.delete(f"/e/{i}/{j}") for j in range(40)]),
]


async def etcd_costs(txns: int, rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-etcdcost-"))
    try:
        async with bench_etcd(tmp) as (server, etcd):
            for r in range(rounds):
                for name, ops in SHAPES:
                    before = proc_cpu(server.pid).self_s
                    for i in range(txns):
                        await etcd.txn([], ops(r * txns + i))
                    spent = proc_cpu(server.pid).self_s - before
                    per = spent / txns * 1e6
                    print(f"etcd, round {r + 1}: {name}: {per:.0f} µs per transaction")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def node_costs() -> None:
    now = datetime.now(UTC)
    job = Job.model_validate(
        {
            "project": "bench",
            "name": "j00001",
            "command": "true",
            "schedules": [{"cron": "* * * * * *"}],
            "keep_runs": 1000,
            "created_at": now,
            "updated_at": now,
            "active_since": now,
        }
    )
    ops = RunOps(Keys(), Snowflake(1), lambda: datetime.now(UTC))

    def one() -> tuple[float, float, float]:
        run = ops.new_run(job, source="schedule", scheduled_at=datetime.now(UTC), schedule="x")
        t0 = time.perf_counter()
        created = ops.create_run_ops(run)
        t1 = time.perf_counter()
        entry = created[-1].request_put.value  # the queue entry, as the worker's watch gets it
        taken = queued_run(run.id, entry) or Run.model_validate_json(entry)
        t2 = time.perf_counter()
        ops.finish_ops(taken, status="succeeded", exit_code=0)
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    best: list[float] | None = None
    for _ in range(5):
        acc = [0.0, 0.0, 0.0]
        for _ in range(3000):
            for i, v in enumerate(one()):
                acc[i] += v
        per = [a / 3000 * 1e6 for a in acc]
        best = per if best is None or sum(per) < sum(best) else best
    assert best is not None
    print(
        f"node: creation {best[0]:.1f}, queue entry read {best[1]:.1f}, completion {best[2]:.1f}, "
        f"total {sum(best):.1f} µs per run"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.etcdcost", description=__doc__)
    ap.add_argument("--txns", type=int, default=1500, help="transactions per shape and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", choices=("etcd", "node"), help="one of the two parts")
    args = ap.parse_args(argv)
    if args.only != "etcd":
        node_costs()
    if args.only != "node":
        asyncio.run(etcd_costs(args.txns, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
