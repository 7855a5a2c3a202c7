"""The leader writes the ticks of several due jobs in shared fenced transactions (real etcd):
fewer transactions, the same guarantees (each tick once, fencing, CAS per job)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from cluster.election import Election
from cluster.errors import LostOwnership
from cluster.ids import Snowflake
from cluster.models import JobSpec, Run
from cluster.session import Session
from cluster.store import Store
from nodes.leader.scheduler import Scheduler

N = 50


async def _setup(etcd, keys, worker_id: int):
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store(etcd, keys, Snowflake(worker_id), lambda: clock[0])
    for i in range(N):
        spec = JobSpec(name=f"j{i}", command="true", schedules=[{"cron": "* * * * * *"}])
        await store.put_job("p", spec)
    session = await Session.open(etcd, 5)
    lead = await Election(etcd, keys, session, "n1").campaign()
    return clock, store, session, lead


async def _runs(etcd, keys) -> list[tuple[Run, int]]:
    res = await etcd.range(keys.runs("p"))
    return [(Run.model_validate_json(kv.value), kv.create_revision) for kv in res.kvs]


async def test_many_due_jobs_share_transactions_and_fire_once(etcd, keys):
    clock, store, session, lead = await _setup(etcd, keys, 3)
    sched = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1")
    await sched._load()
    clock[0] += timedelta(seconds=1, milliseconds=5)
    await sched._fire_batch([("p", f"j{i}") for i in range(N)])
    runs = await _runs(etcd, keys)
    assert sorted(r.job for r, _ in runs) == sorted(f"j{i}" for i in range(N))
    assert {r.scheduled_at for r, _ in runs} == {datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)}
    # 6 ops per job (state, record, index, active, queue, tick): 21 jobs per 128-op transaction
    assert len({rev for _, rev in runs}) == 3
    assert (await etcd.range(keys.queue(), count_only=True)).count == N
    # the same instant again: every job's state says the tick is handled
    await sched._fire_batch([("p", f"j{i}") for i in range(N)])
    assert len(await _runs(etcd, keys)) == N
    await session.close()


async def test_racing_batches_of_two_schedulers_fire_each_tick_once(etcd, keys):
    """Two leaders with stale views: a rejected shared transaction falls back to per-job writes,
    whose CAS lets exactly one run per tick through."""
    clock, store, session, lead = await _setup(etcd, keys, 4)
    a = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1")
    b = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1")
    await a._load()
    await b._load()
    clock[0] += timedelta(seconds=2, milliseconds=1)
    due = [("p", f"j{i}") for i in range(N)]
    await asyncio.gather(a._fire_batch(due), b._fire_batch(list(reversed(due))))
    runs = await _runs(etcd, keys)
    ticks = [(r.job, r.scheduled_at) for r, _ in runs]
    assert len(ticks) == len(set(ticks))  # no tick twice
    # both fire again at the same instant (a loser re-read the state when its CAS failed)
    await a._fire_batch(due)
    await b._fire_batch(due)
    ticks = [(r.job, r.scheduled_at) for r, _ in await _runs(etcd, keys)]
    assert len(ticks) == len(set(ticks))
    latest = datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
    assert {job for job, at in ticks if at == latest} == {f"j{i}" for i in range(N)}
    await session.close()


async def test_deposed_leader_batch_creates_nothing(etcd, keys):
    clock, store, session, lead = await _setup(etcd, keys, 5)
    sched = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1")
    await sched._load()
    await etcd.revoke(session.lease_id)  # deposed, but this scheduler object does not know
    clock[0] += timedelta(seconds=1, milliseconds=5)
    with pytest.raises(LostOwnership):
        await sched._fire_batch([("p", f"j{i}") for i in range(N)])
    assert await _runs(etcd, keys) == []
    assert (await etcd.range(keys.queue(), count_only=True)).count == 0
    await session.close()
