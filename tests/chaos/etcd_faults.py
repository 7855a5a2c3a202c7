"""etcd faults (criterion 3): against a 3-member etcd cluster, kill the etcd leader and restart it,
pause (SIGSTOP) a member and resume it, and lose quorum (two members down) for a while, in rounds,
while a job fires every second (catch-up ``all``). No tick may run twice; ticks that fell due
while there was no quorum are caught up; the nodes recover by themselves (nobody restarts them).

Longer than CI: ``python -m tests.chaos.etcd_faults --rounds 10 --no-quorum 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cluster.etcd import Etcd
from cluster.keys import Keys
from nodes.embedded import etcd_binary
from tests.chaos.checker import check, load_runs
from tests.chaos.harness import (
    EtcdCluster,
    api,
    api_until_ok,
    check_history,
    history_command,
    key_prefix,
    lease_losses,
    print_summary,
    read_history,
    scratch,
    summary_row,
    wait_all_ready,
)
from tests.conftest import ProcessCluster, api_session

JOB = "tick"
CRON = "* * * * * *"


def job_spec(history: Path) -> dict[str, Any]:
    return {
        "name": JOB,
        "command": history_command(history),
        "schedules": [{"cron": CRON}],
        "catchup": "all",
        "overlap": "allow",
        "keep_runs": 100_000,  # the checker reads every run of the window back
        # A node whose lease expires while etcd is unavailable stops its runs: they are lost and
        # retried by policy (at-least-once for lost runs), never run twice as two ticks.
        "retries": 2,
        "retry_interval": 0,
    }


def etcd_leader(etcd_cluster: EtcdCluster) -> int | None:
    """Index of the member that leads the etcd cluster now (None while there is no leader)."""
    live = [m.endpoint for i, m in enumerate(etcd_cluster.members) if etcd_cluster.alive(i)]
    if not live:
        return None
    res = subprocess.run(
        [etcd_binary("etcdctl"), "--endpoints", ",".join(live), "endpoint", "status", "-w", "json"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    try:
        statuses = json.loads(res.stdout or "[]")
    except ValueError:
        return None
    for st in statuses:
        header, leader = st["Status"]["header"], st["Status"].get("leader")
        if leader and header["member_id"] == leader:
            return [m.endpoint for m in etcd_cluster.members].index(st["Endpoint"])
    return None


async def _healthy(etcd_cluster: EtcdCluster, timeout: float = 60) -> None:
    await asyncio.to_thread(etcd_cluster.wait_healthy, timeout)


async def scenario(
    cluster: ProcessCluster,
    etcd_cluster: EtcdCluster,
    etcd: Etcd,
    keys: Keys,
    history: Path,
    *,
    rounds: int,
    down: float = 3,
    no_quorum: float = 6,
    settle: float = 12,
) -> dict[str, Any]:
    """Each round: kill the etcd leader, restart it; pause a member, resume it; stop two members
    (no quorum) for ``no_quorum`` s, restart them. Returns the checker's findings."""
    faults: list[dict[str, Any]] = []

    def note(kind: str, member: int) -> None:
        faults.append({"fault": kind, "member": member, "at": datetime.now(UTC).isoformat()})

    def losses_since(before: dict[str, int]) -> int:
        now = lease_losses(cluster)
        return sum(n - before.get(node, 0) for node, n in now.items())

    await wait_all_ready(cluster)
    async with api_session() as http:
        base = f"{cluster.procs[0].url}/api/v1/projects/default"
        status, body = await api(http, "PUT", f"{base}/jobs/{JOB}", json=job_spec(history))
        assert status in (200, 201), body
        start = datetime.now(UTC) + timedelta(seconds=1)
        await asyncio.sleep(2)
        size = len(etcd_cluster.members)
        for r in range(rounds):
            leader = await asyncio.to_thread(etcd_leader, etcd_cluster)
            victim = leader if leader is not None else r % size
            note("kill-leader", victim)
            etcd_cluster.kill(victim)
            await asyncio.sleep(down)
            etcd_cluster.restart(victim)
            await _healthy(etcd_cluster)
            await asyncio.sleep(1)

            paused = r % size
            note("pause", paused)
            before = lease_losses(cluster)
            etcd_cluster.pause(paused)
            await asyncio.sleep(down)
            etcd_cluster.resume(paused)
            faults[-1]["lease_losses"] = losses_since(before)
            await _healthy(etcd_cluster)
            await asyncio.sleep(1)

            lost = [(r + 1) % size, (r + 2) % size]
            for i in lost:
                note("kill (no quorum)", i)
                etcd_cluster.kill(i)
            await asyncio.sleep(no_quorum)
            for i in lost:
                etcd_cluster.restart(i)
            await _healthy(etcd_cluster)
            await asyncio.sleep(1)
        end = datetime.now(UTC) - timedelta(seconds=1)
        # Nodes recover by themselves; the ticks of the outage are caught up (catch-up `all`).
        await asyncio.sleep(settle)
        await wait_all_ready(cluster, 60)
        urls = [p.url for p in cluster.procs]
        path = f"/api/v1/projects/default/jobs/{JOB}"
        await api_until_ok(http, urls, "PATCH", path, json={"enabled": False})
    runs = await load_runs(etcd, keys, "default", JOB)
    report = check(runs, CRON, start, end)
    hist = check_history(runs, read_history(history))
    alive = [p.node_id for p in cluster.procs if p.alive()]
    return {
        "report": report,
        "history": hist,
        "faults": faults,
        "nodes_alive": alive,
        "ok": report.ok and not report.unfinished and hist.ok,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=5)
    p.add_argument("--down", type=float, default=3)
    p.add_argument("--no-quorum", type=float, default=15)
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
                    cluster,
                    etcd_cluster,
                    etcd,
                    Keys(prefix),
                    tmp / "history",
                    rounds=args.rounds,
                    down=args.down,
                    no_quorum=args.no_quorum,
                )

        try:
            result = asyncio.run(run())
        finally:
            cluster.close()
            etcd_cluster.stop()
        report, hist = result.pop("report"), result.pop("history")
        print(
            json.dumps({**result, "checker": report.as_dict(), "history": hist.as_dict()}, indent=2)
        )
        print_summary(
            [summary_row("etcd_faults", len(result["faults"]), report)], tmp / "summary.json"
        )
        print(f"logs, history and summary.json in {tmp}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
