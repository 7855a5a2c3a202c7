"""Unknown outcomes (criterion 4): every node talks to etcd through a TCP proxy that loses replies
(the request reached etcd, the reply is thrown away and the connection cut), delays traffic and
cuts every connection now and then. A job fires every second (catch-up ``all``); every tick must
have exactly one run and no unexplained second execution: an unknown outcome is resolved by reading
back, never by a blind retry.

Longer than CI: ``python -m tests.chaos.unknown_outcomes --duration 300``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cluster.etcd import Etcd
from cluster.keys import Keys
from nodes.embedded import EtcdProcess
from tests.chaos.checker import check, load_runs
from tests.chaos.harness import (
    TcpProxy,
    api,
    api_until_ok,
    check_history,
    history_command,
    key_prefix,
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
        # Cut connections can cost a node its lease (liveness); its runs are then lost and
        # retried by policy. Safety is what is checked: no tick runs twice unexplained.
        "retries": 2,
        "retry_interval": 0,
    }


async def scenario(
    cluster: ProcessCluster,
    proxies: list[TcpProxy],
    etcd: Etcd,
    keys: Keys,
    history: Path,
    *,
    duration: float,
    every: float = 0.5,
    settle: float = 10,
    seed: int = 1,
) -> dict[str, Any]:
    """Inject faults through ``proxies`` for ``duration`` s while the job ticks; check it."""
    rng = random.Random(seed)
    await wait_all_ready(cluster)
    async with api_session() as http:
        base = f"{cluster.procs[0].url}/api/v1/projects/default"
        status, body = await api(http, "PUT", f"{base}/jobs/{JOB}", json=job_spec(history))
        assert status in (200, 201), body
        start = datetime.now(UTC) + timedelta(seconds=1)
        end = start + timedelta(seconds=duration)
        loop = asyncio.get_running_loop()
        while datetime.now(UTC) < end:
            await asyncio.sleep(every)
            proxy = rng.choice(proxies)
            roll = rng.random()
            if roll < 0.8:
                proxy.armed += 1  # lose the next reply on this proxy
            elif roll < 0.9:
                proxy.cut_all()
            else:
                proxy.delay = 0.3  # a slow second for this proxy's connections
                loop.call_later(1.0, setattr, proxy, "delay", 0.0)
        for proxy in proxies:
            proxy.armed, proxy.delay = 0, 0.0
        await asyncio.sleep(settle)
        await wait_all_ready(cluster)
        urls = [p.url for p in cluster.procs]
        path = f"/api/v1/projects/default/jobs/{JOB}"
        await api_until_ok(http, urls, "PATCH", path, json={"enabled": False})
    runs = await load_runs(etcd, keys, "default", JOB)
    report = check(runs, CRON, start, end)
    hist = check_history(runs, read_history(history))
    # Executions of the ticks in the window (the history writes ...Z timestamps).
    stats = [p.stats for p in proxies]
    return {
        "report": report,
        "history": hist,
        "replies_dropped": sum(s.replies_dropped for s in stats),
        "cuts": sum(s.cuts for s in stats),
        "delayed_chunks": sum(s.delayed_chunks for s in stats),
        "ok": report.ok and not report.unfinished and hist.ok and not hist.executed_twice,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=300)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=3)
    p.add_argument("--every", type=float, default=0.5)
    args = p.parse_args()
    with scratch() as tmp:
        server = EtcdProcess(tmp / "etcd").start()
        prefix = key_prefix()

        async def run() -> dict[str, Any]:
            proxies = [await TcpProxy("127.0.0.1", server.client_port).start()]
            cluster = ProcessCluster([proxies[0].endpoint], prefix, tmp)
            try:
                for i in range(args.nodes):
                    cluster.start(f"node-{i + 1}", lease_ttl=args.lease_ttl)
                async with Etcd([server.endpoint]) as etcd:
                    return await scenario(
                        cluster,
                        proxies,
                        etcd,
                        Keys(prefix),
                        tmp / "history",
                        duration=args.duration,
                        every=args.every,
                    )
            finally:
                cluster.close()
                for proxy in proxies:
                    await proxy.close()

        try:
            result = asyncio.run(run())
        finally:
            server.stop()
        report, hist = result.pop("report"), result.pop("history")
        print(
            json.dumps({**result, "checker": report.as_dict(), "history": hist.as_dict()}, indent=2)
        )
        faults = result["replies_dropped"] + result["cuts"]
        print_summary([summary_row("unknown_outcomes", faults, report)], tmp / "summary.json")
        print(f"logs, history and summary.json in {tmp}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
