"""The node's pure per-run steps, timed alone: ``python -m bench.percpu [--jobs 300] [--ticks 20]
[--rounds 3]``; for another tree, ``cd TREE && PYTHONPATH=. python <this tree>/bench/percpu.py``.

CPU time (``time.process_time``, this process alone, one thread) per unit of work of the steps
the loop thread's profile named (docs/benchmarks.md, "The node's CPU per run — 2026-12-07"):

- ``plan``: the leader planning one job's tick (``plan_job`` with the default materialize-ahead
  of 0.75 s), ``--jobs`` every-second jobs sharing one parsed schedule, each planned once per
  second over ``--ticks`` seconds with its state carried from its previous plan;
- ``build``: one run built from its job (``new_run``: the ``Run`` model with the job's spec
  snapshot embedded, D422);
- ``create``: the operations that create one planned run (``create_run_ops``: the record and
  queue entry encoded, the run remembered for the worker);
- ``finish``: a completion's new record and operations (``finish_ops``);
- ``claim copy``: the claimed copy of a queued run (status, node, start), made both ways (a copy
  and four assignments as before D401, one copy with ``update`` as now) in whichever tree;
- ``metrics``: the counters of one finished run and of one fired tick.

Only code that exists in every tree compared is called, so one copy of this script measures
both. Prints µs of CPU per unit, per round, and the load average beside each round.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import Job
from cluster.runs import RunOps
from cluster.tickplan import parse_job, plan_job
from nodes import metrics

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
KEYS = Keys("/bench")


def _jobs(n: int) -> list[Job]:
    return [
        Job.model_validate(
            {
                "project": "p",
                "name": f"j{i}",
                "command": "true",
                "schedules": [{"cron": "* * * * * *"}],
                "created_at": T0,
                "updated_at": T0,
                "active_since": T0,
            }
        )
        for i in range(n)
    ]


def _timed(fn: Callable[[], int]) -> float:
    """µs of CPU per unit; ``fn`` returns how many units it did."""
    t0 = time.process_time()
    units = fn()
    return (time.process_time() - t0) * 1e6 / max(1, units)


def measure(jobs: int, ticks: int) -> dict[str, float]:
    clock = [T0]
    ops = RunOps(KEYS, Snowflake(1), lambda: clock[0])
    js = _jobs(jobs)
    parsed = [parse_job(j) for j in js]
    states: list[dict[str, Any]] = [{} for _ in js]
    planned: list[Any] = []

    def plan() -> int:
        n = 0
        for sec in range(ticks):
            for i, job in enumerate(js):
                now = T0 + timedelta(seconds=sec, microseconds=250_000 + 500 * i)
                clock[0] = now
                out = plan_job(
                    job,
                    parsed[i],
                    states[i],
                    [],
                    now=now,
                    ahead=0.75,
                    keys=KEYS,
                    new_run=ops.new_run,
                )
                if out.writes:
                    states[i] = out.state
                planned.extend(run for run, _ in out.runs)
                n += 1
        return n

    def create() -> int:
        for run in planned:
            ops.create_run_ops(run)
        return len(planned)

    running: list[Any] = []

    def finish() -> int:
        for run in running:
            ops.finish_ops(
                run, status="succeeded", exit_code=0, claim_revision=7, cpu_seconds=0.001
            )
        return len(running)

    def claim_setattr() -> int:  # the claimed copy as main made it (D401)
        for run in planned:
            started = run.model_copy()
            started.status = "running"
            started.node = "n1"
            started.started_at = T0
            started.not_before = None
        return len(planned)

    def claim_update() -> int:  # ... and as it is made now
        for run in planned:
            run.model_copy(
                update={"status": "running", "node": "n1", "started_at": T0, "not_before": None}
            )
        return len(planned)

    def count() -> int:
        for run in planned:
            metrics.run_finished("succeeded", run.project, run.job)
            metrics.TICKS.labels("fired").inc()
        return len(planned)

    def build() -> int:  # a run built from its job: the Run model, its snapshot embedded
        for job in js:
            for _ in range(ticks):
                ops.new_run(job, source="schedule", scheduled_at=T0, schedule="x")
        return len(js) * ticks

    out = {"plan": _timed(plan)}
    out["build"] = _timed(build)
    out["create"] = _timed(create)
    running.extend(
        run.model_copy(update={"status": "running", "node": "n1", "started_at": T0})
        for run in planned
    )
    out["finish"] = _timed(finish)
    out["claim copy (setattr)"] = _timed(claim_setattr)
    out["claim copy (update)"] = _timed(claim_update)
    if hasattr(metrics, "child"):  # what the node calls per run in the tree measured
        child = metrics.child

        def count_kept() -> int:
            for run in planned:
                metrics.run_finished("succeeded", run.project, run.job)
                child(metrics.TICKS, "fired").inc()
            return len(planned)

        out["metrics"] = _timed(count_kept)
    else:
        out["metrics"] = _timed(count)
    out["runs"] = len(planned)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        res = measure(args.jobs, args.ticks)
        cells = ", ".join(f"{k} {v:.1f}" for k, v in res.items() if k != "runs")
        print(f"round {r + 1} (load {load:.1f}, {res['runs']:.0f} runs): µs CPU per unit: {cells}")


if __name__ == "__main__":
    main()
