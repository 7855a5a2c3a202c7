"""Shard leader kill storm (issue 23 item 3): the leader-kill scenario run per shard.

``scheduler_shards`` K = 4 over 3 nodes on a 3-member etcd, one job every second (catch-up
``all``) in each shard. Every few seconds the leader of the next shard (round robin) is killed
with SIGKILL, once every other node is ready to take over, and restarted once the shard has a new
leader and its job a new run (D373): the shard fails over to the next-ranked node, and when the
restarted node is back it takes its preferred shards again by a graceful hand-over (D304). Every
due tick of every job must have exactly one run, backed by one execution, and the largest gap of
each job's runs must stay within lease TTL + 2 s. Each kill's failover time (the kill to a new
leader of that shard, polled every 50 ms) is reported.

Long mode: ``python -m tests.chaos.shard_leader_kill --duration 120 --every 4``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cluster.errors import Unavailable
from cluster.shard_store import set_shards, shard_leaders
from cluster.shards import election_name, shard_of
from tests.chaos.checker import Report, check, load_runs
from tests.chaos.harness import HistoryReport, check_history, read_history, wait_all_ready
from tests.chaos.scenario import EVERY_SECOND, PROJECT, Stage, recorded_job, run_command, stage
from tests.chaos.storm import STORM_EXTRA, failed_over, standbys_ready, storm_goes_on
from tests.chaos.window import handled_through
from tests.conftest import api_session

SHARDS = 4


def jobs_covering(shards: int, per_shard: int = 1) -> list[str]:
    """Job names of project ``default`` with ``per_shard`` of them in each shard."""
    names: list[str] = []
    count = dict.fromkeys(range(shards), 0)
    i = 0
    while any(c < per_shard for c in count.values()):
        name, i = f"job-{i}", i + 1
        s = shard_of("default", name, shards)
        if count[s] < per_shard:
            count[s] += 1
            names.append(name)
    return names


async def scenario(
    st: Stage,
    *,
    duration: float,
    every: float,
    lease_ttl: int,
    shards: int = SHARDS,
    every_shard: bool = False,
) -> dict[str, Any]:
    """Kill a shard's leader every ``every`` s for ``duration`` s, once every other node is ready
    to take over (D373); with ``every_shard``, longer (up to ``STORM_EXTRA`` s more) until every
    shard's leader was killed once. The checkers' findings."""
    await wait_all_ready(st.cluster)  # etcd's members are up once the nodes are
    deadline = time.monotonic() + 30
    while True:  # the checker's own first call to a freshly started etcd cluster, under load
        try:
            await set_shards(st.etcd, st.keys, shards)
            break
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    jobs = {name: shard_of("default", name, shards) for name in jobs_covering(shards)}
    kills: list[dict[str, Any]] = []
    async with api_session() as http:
        for name in jobs:
            await st.put_job(http, recorded_job(name, st.history))
        start = datetime.now(UTC) + timedelta(seconds=1)
        began = time.monotonic()
        storm_end, hard_end = began + 1 + duration, began + 1 + duration + STORM_EXTRA
        turn = 0
        while storm_goes_on(
            time.monotonic(),
            storm_end,
            len({k["shard"] for k in kills}),
            shards if every_shard else 0,
            hard_end,
        ):
            await asyncio.sleep(every)
            shard, turn = turn % shards, turn + 1
            try:
                leader = (await shard_leaders(st.etcd, st.keys, shards))[shard]
            except Unavailable:
                continue  # the checker's client, not the cluster: try the next turn
            victim = next((p for p in st.cluster.procs if p.node_id == leader and p.alive()), None)
            if victim is None:
                continue
            await standbys_ready(http, st.cluster.procs, leader)
            with contextlib.suppress(Unavailable):
                leader = (await shard_leaders(st.etcd, st.keys, shards))[shard]
            if leader != victim.node_id:
                continue  # it moved while we waited
            victim.signal(signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.to_thread(victim.proc.wait)
            killed_at = datetime.now(UTC)
            failover = await _new_leader(st, shard, killed, lease_ttl + 10)
            # the restart's start-up waits until the shard's job has a run again (D373)
            await failed_over(st, next(n for n, s in jobs.items() if s == shard), killed_at)
            st.cluster.restart(victim)  # a new process with the same id: the cluster keeps 3
            kills.append({"node": leader, "shard": shard, "failover_s": failover})
        end = datetime.now(UTC)  # the window: every tick of the storm
        await asyncio.sleep(lease_ttl + 4)  # the last failover's ticks get their chance
        for name in jobs:  # and their leaders have decided them (D375)
            await handled_through(st.etcd, st.keys, name, end)
        await wait_all_ready(st.cluster, 60)
        for name in jobs:
            async with http.patch(f"{st.urls[0]}{PROJECT}/jobs/{name}", json={"enabled": False}):
                pass
    reports: dict[str, Report] = {}
    histories: dict[str, HistoryReport] = {}
    runs = {name: await load_runs(st.etcd, st.keys, "default", name) for name in jobs}
    # read after the runs: a run that ends in between has its lines written before its commit
    executions = read_history(st.history)
    for name in jobs:
        reports[name] = check(runs[name], EVERY_SECOND, start, end)
        histories[name] = check_history(runs[name], [e for e in executions if e.job == name])
    bound = lease_ttl + 2
    ok = all(
        r.ok and not r.unfinished and histories[n].ok and r.largest_gap <= bound
        for n, r in reports.items()
    )
    return {
        "reports": reports,
        "histories": histories,
        "faults": kills,
        "shards": jobs,
        "gap_bound_s": bound,
        "ok": ok,
    }


async def _new_leader(st: Stage, shard: int, since: float, timeout: float) -> float | None:
    """Seconds from the kill until another node leads ``shard`` (None: not within ``timeout``).
    The killed node's id may come back (restarted, preferred): a leadership held by a NEW
    candidacy of it counts too, which the create revision tells apart; the old one's lease
    must expire first either way."""
    first = await _leader_key(st, shard)
    while time.monotonic() - since < timeout:
        now = await _leader_key(st, shard)
        if now is not None and now != first:
            return round(time.monotonic() - since, 2)
        await asyncio.sleep(0.05)
    return None


async def _leader_key(st: Stage, shard: int) -> str | None:
    prefix = st.keys.election(election_name(shard))
    while True:
        try:
            res = await st.etcd.range(prefix, sort="create", limit=1)
            return res.kvs[0].key if res.kvs else None
        except Unavailable:
            await asyncio.sleep(0.05)


def merged(reports: list[Report]) -> Report:
    out = Report()
    for r in reports:
        out.ticks, out.runs = out.ticks + r.ticks, out.runs + r.runs
        out.missed += r.missed
        out.duplicates.update(r.duplicates)
        out.lost_final += r.lost_final
        out.unfinished += r.unfinished
        out.largest_gap = max(out.largest_gap, r.largest_gap)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=120)
    p.add_argument("--every", type=float, default=4)
    p.add_argument("--lease-ttl", type=int, default=3)

    async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
        async with stage(tmp, nodes=3, lease_ttl=args.lease_ttl) as st:
            out = await scenario(
                st, duration=args.duration, every=args.every, lease_ttl=args.lease_ttl
            )
        out["summary"] = {"failover_s": [k["failover_s"] for k in out["faults"]]}
        reports = out.pop("reports")
        out["per_job"] = {n: r.as_dict() for n, r in reports.items()}
        out["report"] = merged(list(reports.values()))  # the summary row: every job together
        out["history"] = {n: h.as_dict() for n, h in out.pop("histories").items()}
        return out

    run_command("shard_leader_kill", p, run)


if __name__ == "__main__":
    main()
