"""Leader kill scenario: N `cronmesh node` processes, one job every second (catch-up `all`), the
scheduling leader killed with SIGKILL again and again; then every tick of the window must have
exactly one run.

Run it longer than CI does: ``python -m tests.chaos.leader_kill --duration 120 --every 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from cluster.etcd import Etcd
from cluster.keys import Keys
from nodes.embedded import EtcdProcess
from tests.chaos.checker import Report, check, load_runs
from tests.chaos.harness import print_summary, summary_row
from tests.conftest import api_session

JOB = {
    "name": "tick",
    "command": "true",
    "schedules": [{"cron": "* * * * * *"}],
    "catchup": "all",
    "overlap": "allow",
    "keep_runs": 100_000,  # the checker reads every run of the window back
}


async def leader_of(http: aiohttp.ClientSession, nodes: list[Any]) -> str | None:
    for node in nodes:
        if not node.alive():
            continue
        try:
            async with http.get(f"{node.url}/status", timeout=aiohttp.ClientTimeout(total=2)) as r:
                body = await r.json()
                if body.get("leader"):
                    return str(body["leader"])
        except (aiohttp.ClientError, TimeoutError):
            continue
    return None


async def wait_ready(http: aiohttp.ClientSession, node: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{node.url}/readyz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                if r.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{node.node_id} not ready")


async def scenario(
    cluster: Any, etcd: Etcd, keys: Keys, *, duration: float, every: float, settle: float = 8.0
) -> tuple[Report, dict[str, Any]]:
    """Drive the scenario on a started ProcessCluster-like object with node processes."""
    kills: list[dict[str, Any]] = []
    async with api_session() as http:
        for node in cluster.procs:
            await wait_ready(http, node)
        async with http.put(
            f"{cluster.procs[0].url}/api/v1/projects/default/jobs/tick", json=JOB
        ) as r:
            assert r.status in (200, 201), await r.text()
        start = datetime.now(UTC) + timedelta(seconds=1)
        end = start + timedelta(seconds=duration)
        while datetime.now(UTC) < end:
            await asyncio.sleep(every)
            leader = await leader_of(http, cluster.procs)
            victim = next((n for n in cluster.procs if n.node_id == leader and n.alive()), None)
            if victim is None:
                continue
            victim.signal(signal.SIGKILL)
            victim.proc.wait()
            kills.append({"node": victim.node_id, "at": datetime.now(UTC).isoformat()})
            # Bring it back as a new process so the cluster keeps 3 peers.
            cluster.restart(victim)
        # Stop the job at `end`, then wait until every due tick had its chance to be caught up.
        await asyncio.sleep(settle)
        async with http.patch(
            f"{cluster.procs[-1].url}/api/v1/projects/default/jobs/tick", json={"enabled": False}
        ) as r:
            assert r.status == 200, await r.text()
    runs = await load_runs(etcd, keys, "default", "tick")
    report = check(runs, JOB["schedules"][0]["cron"], start, end)
    return report, {"kills": kills, "window": [start.isoformat(), end.isoformat()]}


class _Procs:
    """Minimal standalone cluster of node processes for the command-line version."""

    def __init__(self, endpoint: str, prefix: str, tmp: Path, ttl: int) -> None:
        from tests.conftest import ProcessCluster

        self.inner = ProcessCluster([endpoint], prefix, tmp)
        self.ttl = ttl

    @property
    def procs(self) -> list[Any]:
        return self.inner.procs

    def start(self, node_id: str) -> Any:
        return self.inner.start(node_id, lease_ttl=self.ttl)

    def restart(self, node: Any) -> Any:
        self.inner.procs.remove(node)
        return self.start(node.node_id)

    def close(self) -> None:
        self.inner.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=120)
    p.add_argument("--every", type=float, default=5)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=5)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-chaos-"))
    etcd_proc = EtcdProcess(tmp / "etcd").start()
    prefix = f"/chaos{uuid.uuid4().hex[:6]}"
    procs = _Procs(etcd_proc.endpoint, prefix, tmp, args.lease_ttl)

    async def run() -> tuple[Report, dict[str, Any]]:
        for i in range(args.nodes):
            procs.start(f"node-{i + 1}")
        async with Etcd([etcd_proc.endpoint]) as etcd:
            return await scenario(
                procs,
                etcd,
                Keys(prefix),
                duration=args.duration,
                every=args.every,
                settle=args.lease_ttl + 4,
            )

    try:
        report, info = asyncio.run(run())
    finally:
        procs.close()
        etcd_proc.stop()
    print(json.dumps({**report.as_dict(), **info, "logs": str(tmp)}, indent=2))
    print_summary([summary_row("leader_kill", len(info["kills"]), report)], tmp / "summary.json")
    return 0 if report.ok and not report.unfinished else 1


if __name__ == "__main__":
    sys.exit(main())
