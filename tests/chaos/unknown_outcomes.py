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
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nodes.embedded import EtcdProcess
from tests.chaos.harness import TcpProxy, read_metric
from tests.chaos.scenario import EVERY_SECOND, Stage, recorded_job, run_command, stage
from tests.conftest import api_session

JOB = "tick"


async def scenario(
    st: Stage,
    proxies: list[TcpProxy],
    *,
    duration: float,
    every: float = 0.5,
    settle: float = 10,
    seed: int = 1,
) -> dict[str, Any]:
    """Inject faults through ``proxies`` for ``duration`` s while the job ticks; check it."""
    rng = random.Random(seed)
    async with api_session() as http:
        await st.put_job(http, recorded_job(JOB, st.history))
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
        # What the nodes themselves saw: transactions whose outcome they could not know and
        # resolved by reading back (the proxy's counts include keep-alives and watch traffic).
        unknown = {
            p.node_id: await read_metric(http, p.url, "cronmesh_outcome_unknown_total", default=0)
            for p in st.cluster.procs
        }
        report, hist = await st.close_window(http, JOB, EVERY_SECOND, start, end)
    # Executions of the ticks in the window (the history writes ...Z timestamps).
    stats = [p.stats for p in proxies]
    return {
        "report": report,
        "history": hist,
        "replies_dropped": sum(s.replies_dropped for s in stats),
        "cuts": sum(s.cuts for s in stats),
        "delayed_chunks": sum(s.delayed_chunks for s in stats),
        "outcome_unknown": unknown,
        "ok": report.ok and not report.unfinished and hist.ok and sum(unknown.values()) > 0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=300)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=3)
    p.add_argument("--every", type=float, default=0.5)

    async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
        server = EtcdProcess(tmp / "etcd").start()
        proxies = [await TcpProxy("127.0.0.1", server.client_port).start()]
        try:
            async with stage(
                tmp,
                nodes=args.nodes,
                lease_ttl=args.lease_ttl,
                node_endpoints=[proxies[0].endpoint],
                checker_endpoints=[server.endpoint],
            ) as st:
                result = await scenario(st, proxies, duration=args.duration, every=args.every)
        finally:
            for proxy in proxies:
                await proxy.close()
            server.stop()
        result["faults"] = result["replies_dropped"] + result["cuts"]
        return result

    run_command("unknown_outcomes", p, run)


if __name__ == "__main__":
    main()
