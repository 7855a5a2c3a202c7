"""A shard leader's scheduler fires its own shard's jobs only (D301), against a real etcd: the
jobs of the other shards are neither due nor written, whatever the shard's cache holds (shard 0
keeps every job for the per-cluster loops, D302)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from cluster.election import Election
from cluster.errors import LostOwnership
from cluster.etcd import Compare, Op
from cluster.ids import Snowflake
from cluster.models import JobSpec, Run
from cluster.session import Session
from cluster.shard_store import read_shards, set_shards
from cluster.shards import Shard, election_name, shard_of
from cluster.store import Store
from nodes.leader.scheduler import Scheduler

JOBS = [f"j{i}" for i in range(12)]


async def test_each_shard_scheduler_fires_only_its_own_jobs(etcd, keys):
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store(etcd, keys, Snowflake(7), lambda: clock[0])
    for name in JOBS:
        await store.put_job(
            "p", JobSpec(name=name, command="true", schedules=[{"cron": "* * * * * *"}])
        )
    mine = {s: {("p", n) for n in JOBS if shard_of("p", n, 2) == s} for s in (0, 1)}
    assert mine[0] and mine[1]  # both shards have jobs (else the test proves nothing)
    session = await Session.open(etcd, 5)
    scheds = {}
    for s in (0, 1):
        lead = await Election(etcd, keys, session, "n1", election_name(s)).campaign()
        scheds[s] = Scheduler(
            etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1", shard=Shard(s, 2)
        )
        await scheds[s]._load()
    assert set(scheds[0].jobs) == mine[0] | mine[1]  # shard 0 keeps every job (D302) ...
    assert set(scheds[1].jobs) == mine[1]  # ... the others their own only
    clock[0] += timedelta(seconds=1, milliseconds=5)
    for s in (0, 1):
        due = scheds[s].due.pop_due()
        assert set(due) == mine[s], s  # ... and each fires its own only
        await scheds[s]._fire_batch(due)
    res = await etcd.range(keys.runs("p"))
    fired = sorted(Run.model_validate_json(kv.value).job for kv in res.kvs)
    assert fired == sorted(JOBS)  # every job's tick once, by its own shard's leader
    await session.close()


async def test_changing_k_deposes_every_shard_leader_and_refuses_stale_candidacies(etcd, keys):
    """D300: the new K and the deletion of every shard election are one write, and a candidacy
    is written only under the setting's revision its node read K at."""
    await set_shards(etcd, keys, 4)
    _, setting_rev, _ = await read_shards(etcd, keys)
    guard = Compare.modified(keys.scheduler_shards(), setting_rev)
    session = await Session.open(etcd, 5)
    leads = [
        await Election(etcd, keys, session, "n1", election_name(s), guard=guard).campaign()
        for s in range(4)
    ]
    assert await set_shards(etcd, keys, 2) is True
    assert await set_shards(etcd, keys, 2) is False  # unchanged: nobody is deposed again
    for lead in leads:  # every fenced write of the old split fails: the leader is deposed
        res = await etcd.txn([lead.fence()], [Op.put(keys.prefix + "/probe", "x")], [lead.probe()])
        assert not res.succeeded
        with pytest.raises(LostOwnership):
            lead.check_fenced(res, "probe")
    # a node that read K before the change cannot queue under the old split any more
    stale = Election(etcd, keys, session, "n2", election_name(1), guard=guard)
    with pytest.raises(LostOwnership):
        await stale.campaign()
    assert await etcd.get(stale.key) is None
    await session.close()


async def test_a_shard_leader_other_than_0_keeps_the_waiting_quota(etcd, keys, monkeypatch):
    """The waiter runs on shard 0's leader (D302), but every shard leader holds its own jobs'
    slots that wait on upstreams; the per-job quota (D294) must hold there too, or a job of
    shard 1 piles up waiting slots without bound."""
    from cluster import depends_plan
    from tests.conftest import wait_for

    monkeypatch.setattr(depends_plan, "MAX_WAITING_PER_JOB", 2)
    store = Store(etcd, keys, Snowflake(7), lambda: datetime.now(UTC))
    down = next(f"d{i}" for i in range(100) if shard_of("p", f"d{i}", 2) == 1)
    await store.put_job("p", JobSpec(name="up", command="true"))
    dep = {"job": "up", "window": "1h", "require": "all_succeeded"}
    await store.put_job(
        "p",
        JobSpec(
            name=down,
            command="true",
            schedules=[{"cron": "* * * * * *", "depends_on": [dep], "max_wait": "1h"}],
        ),
    )
    session = await Session.open(etcd, 5)
    lead = await Election(etcd, keys, session, "n1", election_name(1)).campaign()
    sched = Scheduler(
        etcd,
        keys,
        store,
        lead,
        clock=lambda: datetime.now(UTC),
        node_id="n1",
        shard=Shard(1, 2),
    )
    task = asyncio.create_task(sched.run())

    async def quota_skip() -> bool:
        res = await etcd.range(keys.prefix + "/ticks/")
        return any(b"skipped_waiting_quota" in kv.value for kv in res.kvs)

    try:
        await wait_for(quota_skip, 30, what="a slot past the quota skipped")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    held = await etcd.range(keys.waitings(), keys_only=True)
    assert len(held.kvs) == 2
    await session.close()
