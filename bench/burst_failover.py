"""Two scenarios of ``bench.run``: a same-second burst, and fail-over of the scheduling leader.

- burst: ``n`` jobs whose one cron tick is the same instant (a 6-field cron naming that second),
  on one fresh node. Measured: when each tick's process started relative to the instant (p50,
  p99, the last one: "all started within"), how many ticks got no run or more than one.
- failover: three ``cronmesh node`` processes with lease TTL 5 s on one prefix, ``jobs`` jobs
  every second with ``catchup: all``. The leader is killed with SIGKILL ``kills`` times (and
  stopped with SIGTERM a third as many times); after each, the time until scheduling resumed is
  the ``created_at`` of the first run created after the fault minus the fault's instant (the dead
  leader creates nothing, so the first new run is the new leader's). The killed node is started
  again before the next fault. At the end every tick of the whole period is accounted for.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench.harness import NodeProc, put_jobs, sleep_until
from bench.records import count, read_runs
from bench.scenarios import (
    PROJECT,
    Context,
    cleanup,
    new_prefix,
    node_proc,
    put_jobs_frozen,
    sample,
    start_node,
)
from bench.stats import summary_ms

FAILOVER_TTL = 5


# -- burst ---------------------------------------------------------------------------------------


def cron_at(instant: float) -> str:
    """A 6-field cron whose only tick in the next day is ``instant`` (a whole second, UTC)."""
    t = datetime.fromtimestamp(instant, UTC)
    return f"{t.second} {t.minute} {t.hour} {t.day} {t.month} *"


def next_at_second(after: float, second: int) -> float:
    """The first whole UTC second at or after ``after`` whose second-of-minute is ``second``."""
    t = int(after) + (second - int(after) % 60) % 60
    return float(t if t >= after else t + 60)


async def burst(ctx: Context) -> dict[str, dict[str, Any]]:
    return {f"burst_{n}": await burst_of(ctx, n) for n in ctx.mode.bursts}


async def burst_of(ctx: Context, n: int) -> dict[str, Any]:
    prefix = new_prefix(f"burst{n}")
    node = await start_node(ctx, prefix, f"burst-{n}", capacity=None, properties={})  # defaults
    try:
        # How fast this node takes job definitions, to place the instant after the last one.
        t = time.monotonic()
        await put_jobs(ctx.http, node, "warmup", 50, cron="0 0 1 1 *")
        per_job = (time.monotonic() - t) / 50
        # Every job fires at one second of every minute; they are created while the cluster is
        # frozen (D388: a tick then is recorded skipped), and the burst is that second's first
        # tick after the freeze is lifted. (An instant guessed from the warm-up's rate was
        # passed: creating 5,000 jobs slows as they accumulate, 59 s where 31 were guessed.)
        second = int(time.time() + n * per_job * 1.5 + 8) % 60
        t = time.monotonic()
        jobs = await put_jobs_frozen(ctx, node, n, cron=f"{second} * * * * *")
        create_s = time.monotonic() - t
        due = next_at_second(time.time() + 3, second)
        ctx.say(
            f"burst: {n} jobs created in {create_s:.1f} s, due at the same instant "
            f"({due - time.time():.0f} s from now)"
        )
        deadline = due + 120
        while time.time() < deadline:
            await asyncio.sleep(1.0)
            if time.time() > due + 2 and await count(ctx.etcd, f"{prefix}/active/") == 0:
                break
    finally:
        await asyncio.to_thread(node.stop)
    runs = [r for r in await read_runs(ctx.etcd, prefix, PROJECT) if r.scheduled_at == due]
    await cleanup(ctx, node, prefix)
    per_job_runs = Counter(r.job for r in runs)
    started = sorted(r.started_at - due for r in runs if r.started_at is not None)
    created = sorted(r.created_at - due for r in runs)
    return {
        "scenario": f"burst_{n}",
        "jobs": n,
        "job_creation_s": round(create_s, 1),
        "runs": len(runs),
        "missed": sum(1 for j in jobs if j not in per_job_runs),
        "duplicates": sum(1 for c in per_job_runs.values() if c > 1),
        "statuses": dict(Counter(r.status for r in runs)),
        "all_created_s": round(created[-1], 3) if created else None,
        "all_started_s": round(started[-1], 3) if len(started) == n else None,
        "start_offset": summary_ms(started),
        "start_offset_ms_sample": sample(started),
    }


# -- failover ------------------------------------------------------------------------------------


async def is_leader(http: aiohttp.ClientSession, node: NodeProc) -> bool:
    with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
        async with http.get(f"{node.url}/metrics", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return "\ncronmesh_is_leader 1.0" in await r.text()
    return False


async def leader_of(ctx: Context, nodes: list[NodeProc], within: float = 30.0) -> NodeProc:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for node in nodes:
            if node.alive() and await is_leader(ctx.http, node):
                return node
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no leader among {nodes} within {within} s")


def failover_node(ctx: Context, prefix: str, name: str) -> NodeProc:
    # default settings but the lease TTL, named by the goal's row (5 s, the default too)
    return node_proc(ctx, prefix, name, capacity=None, lease_ttl=FAILOVER_TTL)


async def wait_ready(ctx: Context, node: NodeProc, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with ctx.http.get(f"{node.url}/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{node!r} not ready within {within} s")


async def failover(ctx: Context) -> dict[str, dict[str, Any]]:
    kills, stops, jobs_n = ctx.mode.kills, max(1, ctx.mode.kills // 3), 10
    prefix = new_prefix("failover")
    names = ["fo-a", "fo-b", "fo-c"]
    nodes = {name: failover_node(ctx, prefix, name) for name in names}
    faults: list[dict[str, Any]] = []
    ctx.say(f"fail-over: 3 nodes, lease TTL {FAILOVER_TTL} s, {kills} SIGKILLs, {stops} SIGTERMs")
    try:
        for node in nodes.values():
            await wait_ready(ctx, node)
        first = await leader_of(ctx, list(nodes.values()))
        jobs = await put_jobs(
            ctx.http, first, PROJECT, jobs_n, extra={"catchup": "all", "overlap": "allow"}
        )
        await asyncio.sleep(3.0)
        t_begin = float(int(time.time()) + 1)
        for i in range(kills + stops):
            kind = "SIGKILL" if i < kills else "SIGTERM"
            leader = await leader_of(ctx, list(nodes.values()))
            await sleep_until(int(time.time()) + 1.3)  # mid-second: not on a tick boundary
            at = time.time()
            leader.proc.send_signal(signal.SIGKILL if kind == "SIGKILL" else signal.SIGTERM)
            new = await leader_of(
                ctx, [n for n in nodes.values() if n is not leader], within=FAILOVER_TTL + 20
            )
            faults.append({"kind": kind, "at": at, "old": leader.node_id, "new": new.node_id})
            await asyncio.to_thread(leader.stop)
            ctx.procs.remove(leader)
            nodes[leader.node_id] = failover_node(ctx, prefix, leader.node_id)
            await wait_ready(ctx, nodes[leader.node_id])
            await asyncio.sleep(2.0)
        t_end = float(int(time.time()) - 3)
        await asyncio.sleep(4.0)
    finally:
        for node in nodes.values():
            await asyncio.to_thread(node.stop)
            ctx.procs.remove(node)
    runs = await read_runs(ctx.etcd, prefix, PROJECT)
    await cleanup_prefix(ctx, prefix)
    created = sorted(r.created_at for r in runs)
    for f in faults:
        after = [c for c in created if c > f["at"]]
        f["resumed_after_s"] = round(after[0] - f["at"], 3) if after else None
    window = [r for r in runs if r.scheduled_at is not None and t_begin <= r.scheduled_at < t_end]
    per_tick = Counter((r.job, round(r.scheduled_at or 0, 3)) for r in window)
    expected = {(j, float(s)) for j in jobs for s in range(int(t_begin), int(t_end))}

    def resumed(kind: str) -> list[float]:
        return [f["resumed_after_s"] for f in faults if f["kind"] == kind and f["resumed_after_s"]]

    return {
        "failover": {
            "scenario": "failover",
            "lease_ttl_s": FAILOVER_TTL,
            "jobs": jobs_n,
            "kills": kills,
            "graceful_stops": stops,
            "faults": faults,
            "resume_after_kill": summary_ms(resumed("SIGKILL")),
            "resume_after_stop": summary_ms(resumed("SIGTERM")),
            "resume_after_kill_ms_sample": sample(resumed("SIGKILL")),
            "ticks_due": len(expected),
            "missed": len(expected - set(per_tick)),
            "duplicates": sum(1 for c in per_tick.values() if c > 1),
            "late_runs": sum(1 for r in window if r.source != "schedule"),
        }
    }


async def cleanup_prefix(ctx: Context, prefix: str) -> None:
    await ctx.etcd.delete(prefix + "/", prefix=True)
    status = await ctx.etcd.status()
    await asyncio.to_thread(ctx.etcd_server.compact, int(status["revision"]))
