"""Worker faults (criterion 2): a run is started, then the worker executing it is killed (SIGKILL)
or frozen (SIGSTOP, SIGCONT after the run moved on). The run must be retried on another node and
finish there; the stale worker must commit nothing (only the current claim finishes a run).

Longer than CI: ``python -m tests.chaos.worker_faults --trials 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from cluster.etcd import Etcd
from cluster.keys import Keys
from tests.chaos.checker import load_runs
from tests.chaos.harness import (
    EtcdCluster,
    api,
    check_history,
    history_command,
    key_prefix,
    node_ready,
    print_summary,
    read_history,
    scratch,
    summary_row,
    wait_all_ready,
)
from tests.conftest import ProcessCluster, api_session

JOB = "work"


def job_spec(history: Path, work: float) -> dict[str, Any]:
    return {
        "name": JOB,
        "command": history_command(history, work),
        "schedules": [],
        "retries": 3,
        "retry_interval": 0,
        "overlap": "allow",
        "keep_runs": 100_000,  # the checker reads every run of the window back
    }


def first_claim(run: dict[str, Any]) -> int | None:
    return run["attempts"][0].get("claim_revision") if run["attempts"] else None


async def _poll(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def scenario(
    cluster: ProcessCluster, etcd: Etcd, keys: Keys, history: Path, *, trials: int, work: float = 3
) -> dict[str, Any]:
    """Alternate SIGKILL and SIGSTOP of the worker running a fresh run; return the findings."""
    faults: list[dict[str, Any]] = []
    failures: list[str] = []
    await wait_all_ready(cluster)
    async with api_session() as http:
        base = f"{cluster.procs[0].url}/api/v1/projects/default"
        status, body = await api(http, "PUT", f"{base}/jobs/{JOB}", json=job_spec(history, work))
        assert status in (200, 201), body
        for trial in range(trials):
            kind = "kill" if trial % 2 == 0 else "stop"
            url = next(p.url for p in cluster.procs if p.alive())
            status, body = await api(http, "POST", f"{url}/api/v1/projects/default/jobs/{JOB}/runs")
            assert status in (200, 201, 202), body
            run_id = body["id"]
            run_url = f"{url}/api/v1/projects/default/runs/{run_id}"

            async def started(run_url: str = run_url) -> dict[str, Any] | None:
                # Running and its process started (the start line is in the history).
                s, r = await api(http, "GET", run_url)
                if s != 200 or r["status"] != "running" or not r.get("node"):
                    return None
                lines = read_history(history)
                ok = any(e.run == r["id"] and e.node == r["node"] for e in lines)
                return r if ok else None

            run = await _poll(started, 30, f"run {run_id} running")
            victim = next(p for p in cluster.procs if p.node_id == run["node"])
            faults.append({"trial": trial, "fault": kind, "node": victim.node_id, "run": run_id})
            if kind == "kill":
                victim.signal(signal.SIGKILL)
                victim.proc.wait()
                cluster.restart(victim)
            else:
                victim.signal(signal.SIGSTOP)

            live = next(p.url for p in cluster.procs if p is not victim and p.alive())
            live_run = f"{live}/api/v1/projects/default/runs/{run_id}"

            # A killed node is restarted with its id at once, so its retry may land on the new
            # process (a new lease, a new claim); a frozen node's retry must land elsewhere.
            elsewhere = None if kind == "kill" else victim.node_id

            async def moved(
                live_run: str = live_run, elsewhere: str | None = elsewhere
            ) -> dict[str, Any] | None:
                s, r = await api(http, "GET", live_run)
                if s != 200 or r["attempt"] < 2 or not r.get("node"):
                    return None
                return r if r["node"] != elsewhere else None

            try:
                await _poll(moved, 60, f"run {run_id} retried elsewhere")
            finally:
                if kind == "stop":
                    victim.signal(signal.SIGCONT)

            async def finished(live_run: str = live_run) -> dict[str, Any] | None:
                s, r = await api(http, "GET", live_run)
                return r if s == 200 and r["status"] in ("succeeded", "failed", "lost") else None

            final = await _poll(finished, 60, f"run {run_id} finished")
            if final["status"] != "succeeded":
                failures.append(f"{run_id}: {final['status']} {final.get('error')}")
            wins = [a for a in final["attempts"] if a["status"] == "succeeded"]
            if len(wins) != 1 or wins[0]["node"] == elsewhere:
                failures.append(f"{run_id}: successful attempts {wins}")
            if wins and wins[0]["claim_revision"] == first_claim(final):
                failures.append(f"{run_id}: the lost claim finished the run")
            first = final["attempts"][0]
            if first["node"] != victim.node_id or first["status"] != "lost":
                failures.append(f"{run_id}: first attempt {first}")
        # Every node, the frozen ones included, recovers by itself.
        for p in cluster.procs:
            await _poll(lambda p=p: node_ready(http, p.url), 60, f"{p.node_id} ready again")
        # Let the stale executions (processes of frozen/killed workers) finish their side effects.
        await asyncio.sleep(work + 1)
        # The stale worker's completion must not have changed any record afterwards.
    runs = await load_runs(etcd, keys, "default", JOB)
    hist = check_history(runs, read_history(history))
    for run in runs:
        if run["status"] != "succeeded":
            failures.append(f"{run['id']} ended {run['status']}")
    return {
        "faults": faults,
        "failures": failures,
        "history": hist.as_dict(),
        "ok": not failures and hist.ok,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=3)
    p.add_argument("--work", type=float, default=3)
    args = p.parse_args()
    with scratch() as tmp:
        etcd_cluster = EtcdCluster(tmp).start()
        prefix = key_prefix()
        cluster = ProcessCluster(etcd_cluster.endpoints, prefix, tmp)

        async def run() -> dict[str, Any]:
            for i in range(args.nodes):
                cluster.start(f"node-{i + 1}", lease_ttl=args.lease_ttl)
            async with Etcd(etcd_cluster.endpoints) as etcd:
                return await scenario(
                    cluster, etcd, Keys(prefix), tmp / "history", trials=args.trials, work=args.work
                )

        try:
            result = asyncio.run(run())
        finally:
            cluster.close()
            etcd_cluster.stop()
        print(json.dumps(result, indent=2))
        row = summary_row("worker_faults", len(result["faults"]), None, len(result["faults"]))
        row["duplicates"] = len(result["history"]["duplicates"])
        row["lost"] = len(result["failures"])
        print_summary([row], tmp / "summary.json")
        print(f"logs, history and summary.json in {tmp}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
