"""Runs written ahead of their tick (D120): the leader creates a scheduled run up to
``materialize_ahead`` seconds early, a worker claims it at once and starts its process on a local
timer at the tick — never before it. A cancel while it waits means it never starts."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from tests.conftest import wait_for

P = "/api/v1/projects/ahead"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def _runs(cluster, job: str) -> list[dict]:
    status, body = await cluster.request("GET", f"{P}/runs?job={job}&limit=100")
    assert status == 200, body
    return body["runs"]


async def test_scheduled_runs_are_written_early_and_start_at_their_tick_never_before(
    cluster, tmp_path: Path
):
    await cluster.start(materialize_ahead=1.5)
    marks = tmp_path / "starts"
    job = {
        "name": "early",
        "command": f'echo "$CRONMESH_RUN_ID $(date +%s.%N)" >> {marks}',
        "schedules": [{"cron": "* * * * * *"}],
    }
    put_at = time.time()
    assert (await cluster.request("PUT", f"{P}/jobs/early", json=job))[0] == 201
    # A tick that comes sooner than the window after the job exists cannot be written early;
    # only the ticks the leader had the full window for are checked.
    settled = put_at + 1.5 + 0.5

    async def three_done():
        done = [
            r
            for r in await _runs(cluster, "early")
            if r["status"] == "succeeded" and _at(r["scheduled_at"]).timestamp() >= settled
        ]
        return done if len(done) >= 3 else None

    done = await wait_for(three_done, 30, what="three scheduled runs")
    await cluster.request("PATCH", f"{P}/jobs/early", json={"enabled": False})
    started = {}
    for line in marks.read_text().splitlines():
        run_id, at = line.split()
        started[run_id] = float(at)
    for run in done:
        tick = _at(run["scheduled_at"])
        assert run["source"] == "schedule", run
        # written before its tick (that is the point), started at or after it (that is the rule)
        assert _at(run["created_at"]) < tick, run
        assert started[run["id"]] >= tick.timestamp(), (run, started[run["id"]])


async def test_a_run_cancelled_while_armed_never_starts(cluster, tmp_path: Path):
    node = await cluster.start(materialize_ahead=8)
    node.worker.claim_ahead = 8  # a wide window to cancel in (0.75 s by default)
    marks = tmp_path / "starts"  # one file per run that started, named by its id
    marks.mkdir()
    marks.chmod(0o777)
    job = {
        "name": "armed",
        "command": f'touch "{marks}/$CRONMESH_RUN_ID"',
        "schedules": [{"cron": "*/10 * * * * *"}],
    }
    assert (await cluster.request("PUT", f"{P}/jobs/armed", json=job))[0] == 201

    async def armed():
        # claimed (running on a node) with its tick at least 4 s ahead: time for the cancel to
        # land first on a loaded machine (a run armed 1 s before its tick may start first; the
        # runs before the chosen one start as they should)
        for r in await _runs(cluster, "armed"):
            if r["status"] == "running" and r.get("not_before"):
                ahead = datetime.fromisoformat(r["not_before"]).timestamp() - time.time()
                if ahead >= 4:
                    return r
        return None

    run = await wait_for(armed, 60, what="a run claimed at least 4 s ahead of its tick")
    await cluster.request("PATCH", f"{P}/jobs/armed", json={"enabled": False})
    status, body = await cluster.request("POST", f"{P}/runs/{run['id']}/cancel")
    assert status in (200, 202), body

    async def cancelled():
        s, r = await cluster.request("GET", f"{P}/runs/{run['id']}")
        return r if s == 200 and r["status"] == "cancelled" else None

    final = await wait_for(cancelled, 20, what="the armed run cancelled")
    assert "before it started" in (final.get("error") or ""), final
    assert not (marks / run["id"]).exists()


async def test_planning_ahead_fires_and_misses_exactly_what_planning_at_the_tick_would(etcd, keys):
    """The leader plans 1.5 s early with grace and deadline widened by as much: the future ticks
    get ``not_before``; a late tick under ``catchup: none`` fires within the 2 s grace, not after;
    jobs whose overlap can change meanwhile are not planned early."""
    from datetime import UTC, timedelta

    from cluster.election import Election
    from cluster.ids import Snowflake
    from cluster.models import JobSpec, Run
    from cluster.session import Session
    from cluster.store import Store
    from nodes.leader.scheduler import Scheduler

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    clock = [t0]
    store = Store(etcd, keys, Snowflake(5), lambda: clock[0])
    every = [{"cron": "* * * * * *"}]
    await store.put_job("p", JobSpec(name="early", command="true", schedules=every, catchup="all"))
    await store.put_job(
        "p", JobSpec(name="forbid", command="true", schedules=every, overlap="forbid")
    )
    tens = [{"cron": "*/10 * * * * *"}]
    for name in ("none-a", "none-b"):
        await store.put_job("p", JobSpec(name=name, command="true", schedules=tens, catchup="none"))
    session = await Session.open(etcd, 5)
    lead = await Election(etcd, keys, session, "n1").campaign()
    sched = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1", ahead=1.5)
    await sched._load()

    async def runs(job: str) -> list[Run]:
        res = await etcd.range(keys.runs("p"))
        found = [Run.model_validate_json(kv.value) for kv in res.kvs]
        return sorted((r for r in found if r.job == job), key=lambda r: r.scheduled_at)

    clock[0] = t0 + timedelta(seconds=1, milliseconds=500)  # horizon: t0 + 3 s
    for job in ("early", "forbid"):
        await sched.fire(("p", job))
    early = await runs("early")
    assert [r.scheduled_at for r in early] == [t0 + timedelta(seconds=s) for s in (1, 2, 3)]
    # ticks still ahead wait for their instant; the one already due does not
    assert [r.not_before for r in early] == [None, early[1].scheduled_at, early[2].scheduled_at]
    assert {r.source for r in early} == {"schedule"}
    forbid = await runs("forbid")
    assert [(r.scheduled_at, r.not_before) for r in forbid] == [(t0 + timedelta(seconds=1), None)]

    # catchup none, tick t0 + 10 s: 1.9 s late it is on time (fires), 2.1 s late it is missed —
    # as at the tick itself, although the plan looks 1.5 s further
    clock[0] = t0 + timedelta(seconds=11, milliseconds=900)
    await sched.fire(("p", "none-a"))
    assert [r.scheduled_at for r in await runs("none-a")] == [t0 + timedelta(seconds=10)]
    clock[0] = t0 + timedelta(seconds=12, milliseconds=100)
    await sched.fire(("p", "none-b"))
    assert await runs("none-b") == []
    await session.close()
