"""Worker faults (criterion 2): a run is started, then the worker executing it is killed (SIGKILL)
or frozen (SIGSTOP, SIGCONT after the run moved on). The run must be retried on another node and
finish there; the stale worker must commit nothing (only the current claim finishes a run).

Longer than CI: ``python -m tests.chaos.worker_faults --trials 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from tests.chaos.checker import load_runs
from tests.chaos.harness import api, check_history, node_ready, read_history
from tests.chaos.overlap import beating_command, check_file
from tests.chaos.scenario import PROJECT, Stage, recorded_job, run_command, stage
from tests.conftest import api_session

JOB = "work"
# SIGKILL; SIGSTOP just before the process ends (it ends while its node is frozen: its result is
# fenced); SIGSTOP with most of the work left (its node's fence kills it before the lease expires)
KINDS = ("kill", "stop", "freeze")
FREEZE_BEFORE_END = 0.3  # s: well within TTL - margin - TTL/3 (0.93 s at TTL 2)


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


async def scenario(st: Stage, *, trials: int, work: float = 3) -> dict[str, Any]:
    """SIGKILL, late SIGSTOP, early SIGSTOP (in turn) of the worker running a fresh run; return
    the findings."""
    faults: list[dict[str, Any]] = []
    failures: list[str] = []
    cluster = st.cluster
    async with api_session() as http:
        spec = recorded_job(JOB, st.history, cron=None, work=work, retries=3)
        # It says what it does every 50 ms: the attempts of one run must not overlap (D152).
        spec["command"] = beating_command(st.history, work)
        await st.put_job(http, spec)
        for trial in range(trials):
            kind = KINDS[trial % len(KINDS)]
            url = next(p.url for p in cluster.procs if p.alive())
            status, body = await api(http, "POST", f"{url}{PROJECT}/jobs/{JOB}/runs")
            assert status in (200, 201, 202), body
            run_id = body["id"]
            run_url = f"{url}{PROJECT}/runs/{run_id}"

            async def started(run_url: str = run_url) -> dict[str, Any] | None:
                # Running and its process started (the start line is in the history).
                s, r = await api(http, "GET", run_url)
                if s != 200 or r["status"] != "running" or not r.get("node"):
                    return None
                lines = read_history(st.history)
                ok = any(e.run == r["id"] and e.node == r["node"] for e in lines)
                return r if ok else None

            run = await _poll(started, 30, f"run {run_id} running")
            victim = next(p for p in cluster.procs if p.node_id == run["node"])
            faults.append({"trial": trial, "fault": kind, "node": victim.node_id, "run": run_id})
            if kind == "kill":
                victim.signal(signal.SIGKILL)
                victim.proc.wait()
                cluster.restart(victim)
            elif kind == "stop":
                # Frozen just before its process ends: the process ends while the node is frozen,
                # before the fence's deadline, and its result must be refused (fenced).
                began = min(
                    e.at
                    for e in read_history(st.history)
                    if (e.phase, e.run, e.node) == ("start", run_id, victim.node_id)
                )
                await asyncio.sleep(max(0.0, began + work - FREEZE_BEFORE_END - time.time()))
                victim.signal(signal.SIGSTOP)
            else:  # "freeze": with most of its work left, its fence must kill it in time (D152)
                victim.signal(signal.SIGSTOP)

            live = next(p.url for p in cluster.procs if p is not victim and p.alive())
            live_run = f"{live}{PROJECT}/runs/{run_id}"

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
                if kind == "stop":
                    # The frozen node's process is not frozen: let it run to its end, so its
                    # result exists and must be refused (fenced), not merely never produced.
                    async def stale_ended(run_id: str = run_id, node: str = victim.node_id) -> bool:
                        return any(
                            (e.phase, e.run, e.node, e.attempt) == ("end", run_id, node, 1)
                            for e in read_history(st.history)
                        )

                    await _poll(stale_ended, work + 30, f"the frozen node's process of {run_id}")
            finally:
                if kind != "kill":
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
    runs = await load_runs(st.etcd, st.keys, "default", JOB)
    hist = check_history(runs, read_history(st.history))
    for run in runs:
        if run["status"] != "succeeded":
            failures.append(f"{run['id']} ended {run['status']}")
    overlap = check_file(st.history)
    return {
        "faults": faults,
        "failures": failures,
        "history": hist.as_dict(),
        "overlap": overlap.as_dict(),
        "fenced": hist.fenced,
        # a late SIGSTOP (trial 1, 4, …): its result fenced; attempts never overlap (D152)
        "ok": not failures and hist.ok and overlap.ok and (trials < 2 or bool(hist.fenced)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=3)
    p.add_argument("--work", type=float, default=3)

    async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
        async with stage(tmp, nodes=args.nodes, lease_ttl=args.lease_ttl) as st:
            result = await scenario(st, trials=args.trials, work=args.work)
        result["summary"] = {
            "runs": len(result["faults"]),
            "duplicates": len(result["history"]["duplicates"]),
            "lost": len(result["failures"]),
        }
        return result

    run_command("worker_faults", p, run)


if __name__ == "__main__":
    main()
