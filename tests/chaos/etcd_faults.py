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
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nodes.devtools.embedded import etcd_binary
from tests.chaos.harness import EtcdCluster, lease_losses
from tests.chaos.scenario import EVERY_SECOND, Stage, recorded_job, run_command, stage
from tests.conftest import api_session

JOB = "tick"


def etcd_leader(etcd_cluster: EtcdCluster) -> int | None:
    """Index of the member that leads the etcd cluster now (None while there is no leader)."""
    live = [m.endpoint for i, m in enumerate(etcd_cluster.members) if etcd_cluster.alive(i)]
    if not live:
        return None
    try:
        res = subprocess.run(
            [
                etcd_binary("etcdctl"),
                "--endpoints",
                ",".join(live),
                "endpoint",
                "status",
                "-w",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return None
    try:
        statuses = json.loads(res.stdout or "[]")
    except ValueError:
        return None
    for st in statuses:
        header, leader = st["Status"]["header"], st["Status"].get("leader")
        if leader and header["member_id"] == leader:
            return [m.endpoint for m in etcd_cluster.members].index(st["Endpoint"])
    return None


async def _find_leader(etcd_cluster: EtcdCluster, timeout: float = 30) -> int:
    """The etcd leader's index, asked until it answers: a fault called "kill the leader" must
    never hit a follower because one lookup failed (an election in progress, a slow member)."""
    deadline = time.monotonic() + timeout
    while True:
        leader = await asyncio.to_thread(etcd_leader, etcd_cluster)
        if leader is not None:
            return leader
        if time.monotonic() > deadline:
            raise TimeoutError(f"no etcd leader found within {timeout}s")
        await asyncio.sleep(0.5)


def _member_ids(etcd_cluster: EtcdCluster) -> list[int]:
    """Each member's raft id, in member order (read from ``etcdctl member list``)."""
    res = subprocess.run(
        [
            etcd_binary("etcdctl"),
            "--endpoints",
            ",".join(etcd_cluster.endpoints),
            "member",
            "list",
            "-w",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    by_url = {m["clientURLs"][0]: int(m["ID"]) for m in json.loads(res.stdout)["members"]}
    return [by_url[endpoint] for endpoint in etcd_cluster.endpoints]


async def move_leader_off(etcd_cluster: EtcdCluster, i: int, timeout: float = 30) -> None:
    """Make sure member ``i`` is a follower: if it leads the etcd cluster, hand the leadership
    to the next member (``etcdctl move-leader``) and wait until another member leads."""
    deadline = time.monotonic() + timeout
    while True:
        leader = await _find_leader(etcd_cluster, timeout)
        if leader != i:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"etcd member {i} still leads after {timeout}s")
        to = (i + 1) % etcd_cluster.size
        ids = await asyncio.to_thread(_member_ids, etcd_cluster)
        await asyncio.to_thread(
            subprocess.run,
            [
                etcd_binary("etcdctl"),
                "--endpoints",
                etcd_cluster.endpoints[i],
                "move-leader",
                f"{ids[to]:x}",
            ],
            capture_output=True,
            timeout=10,
        )


async def _healthy(etcd_cluster: EtcdCluster, timeout: float = 60) -> None:
    await asyncio.to_thread(etcd_cluster.wait_healthy, timeout)


async def scenario(
    st: Stage,
    *,
    rounds: int,
    down: float = 3,
    no_quorum: float = 6,
    settle: float = 12,
) -> dict[str, Any]:
    """Each round: kill the etcd leader, restart it; pause a member, resume it; stop two members
    (no quorum) for ``no_quorum`` s, restart them. Returns the checkers' findings."""
    etcd_cluster, cluster = st.etcd_cluster, st.cluster
    assert etcd_cluster is not None, "etcd faults need the stage's own etcd cluster"
    faults: list[dict[str, Any]] = []

    def note(kind: str, member: int) -> None:
        faults.append({"fault": kind, "member": member, "at": datetime.now(UTC).isoformat()})

    def losses_since(before: dict[str, int]) -> int:
        now = lease_losses(cluster)
        return sum(n - before.get(node, 0) for node, n in now.items())

    async with api_session() as http:
        await st.put_job(http, recorded_job(JOB, st.history))
        start = datetime.now(UTC) + timedelta(seconds=1)
        await asyncio.sleep(2)
        size = len(etcd_cluster.members)
        for r in range(rounds):
            victim = await _find_leader(etcd_cluster)
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
        report, hist = await st.close_window(http, JOB, EVERY_SECOND, start, end)
    alive = [p.node_id for p in cluster.procs if p.alive()]
    return {
        "report": report,
        "history": hist,
        "faults": faults,
        "nodes_alive": alive,
        "ok": report.ok and not report.unfinished and hist.ok,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=5)
    p.add_argument("--down", type=float, default=3)
    p.add_argument("--no-quorum", type=float, default=15)

    async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
        async with stage(tmp, nodes=args.nodes, lease_ttl=args.lease_ttl) as st:
            return await scenario(st, rounds=args.rounds, down=args.down, no_quorum=args.no_quorum)

    run_command("etcd_faults", p, run)


if __name__ == "__main__":
    main()
