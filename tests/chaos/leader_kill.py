"""Leader kill storm (criterion 1): a job every second (catch-up ``all``) on 3 nodes over a 3-member
etcd; the scheduling leader is killed with SIGKILL every few seconds, once every other node is
ready to take over, and restarted as soon as the new leader has created a run (the cluster keeps
its nodes; the restart's start-up stays out of the fail-over it would slow down, D373). Every due
tick must have exactly one run, backed by exactly one execution, and the largest gap between runs
created must stay within lease TTL + 2 s (the time a killed leader's lease takes to expire, plus
the new leader's reaction).

Long mode: ``python -m tests.chaos.leader_kill --duration 120 --every 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.chaos.harness import leader_of, wait_ready
from tests.chaos.scenario import EVERY_SECOND, Stage, recorded_job, run_command, stage
from tests.chaos.storm import STORM_EXTRA, failed_over, standbys_ready, storm_goes_on
from tests.chaos.window import handled_through
from tests.conftest import api_session

__all__ = ["leader_of", "scenario", "wait_ready"]

JOB = "tick"


async def scenario(
    st: Stage,
    *,
    duration: float,
    every: float,
    lease_ttl: int,
    settle: float | None = None,
    min_kills: int = 0,
) -> dict[str, Any]:
    """Kill the leader every ``every`` s for ``duration`` s (longer, up to ``STORM_EXTRA`` s more,
    until ``min_kills`` kills are made); the checkers' findings. A leader is killed only once
    every other node is ready to take over (``standbys_ready``, D373)."""
    kills: list[dict[str, Any]] = []
    async with api_session() as http:
        await st.put_job(http, recorded_job(JOB, st.history))
        start = datetime.now(UTC) + timedelta(seconds=1)
        began = time.monotonic()
        storm_end, hard_end = began + 1 + duration, began + 1 + duration + STORM_EXTRA
        while storm_goes_on(time.monotonic(), storm_end, len(kills), min_kills, hard_end):
            await asyncio.sleep(every)
            # the leader, once there is one again (the last fail-over may still be going on: on a
            # loaded machine, skipping a whole period for it cost the storm its kills, D329)
            victim = None
            wait_until = time.monotonic() + every
            while victim is None and time.monotonic() < wait_until:
                leader = await leader_of(http, st.cluster.procs)
                victim = next(
                    (p for p in st.cluster.procs if p.node_id == leader and p.alive()), None
                )
                if victim is None:
                    await asyncio.sleep(0.2)
            if victim is None:
                continue
            await standbys_ready(http, st.cluster.procs, victim.node_id)
            if await leader_of(http, st.cluster.procs) != victim.node_id:
                continue  # it moved while we waited: the next turn finds the new one
            victim.signal(signal.SIGKILL)
            await asyncio.to_thread(victim.proc.wait)
            killed = datetime.now(UTC)
            kills.append({"node": victim.node_id, "at": killed.isoformat()})
            await failed_over(st, JOB, killed)  # the restart's start-up waits for it (D373)
            st.cluster.restart(victim)  # a new process with the same id: the cluster keeps 3
        end = datetime.now(UTC)  # the window: every tick of the storm
        # every tick of the window gets its chance (a last leader change included)
        await asyncio.sleep(settle if settle is not None else lease_ttl + 4)
        await handled_through(st.etcd, st.keys, JOB, end)  # and the leader has decided them (D375)
        report, hist = await st.close_window(http, JOB, EVERY_SECOND, start, end)
    bound = lease_ttl + 2
    return {
        "report": report,
        "history": hist,
        "faults": kills,
        "gap_bound_s": bound,
        "window": [start.isoformat(), end.isoformat()],
        "ok": report.ok and not report.unfinished and hist.ok and report.largest_gap <= bound,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=120)
    p.add_argument("--every", type=float, default=5)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=5)

    async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
        async with stage(tmp, nodes=args.nodes, lease_ttl=args.lease_ttl) as st:
            return await scenario(
                st, duration=args.duration, every=args.every, lease_ttl=args.lease_ttl
            )

    run_command("leader_kill", p, run)


if __name__ == "__main__":
    main()
