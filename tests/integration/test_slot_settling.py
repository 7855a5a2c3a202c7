"""The slot watcher on a real etcd with an injected clock: open slots written with their ticks,
settled at their deadline and not before, exactly once when two leaders' watchers race, and not
at all by a deposed leader (D230)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from cluster.election import Election
from cluster.errors import LostOwnership
from cluster.ids import Snowflake
from cluster.models import JobSpec
from cluster.session import Session
from cluster.store import Store
from nodes.leader.deadlines import SlotWatcher
from nodes.leader.scheduler import Scheduler

N = 20
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def _fired(etcd, keys, worker_id: int):
    """N jobs with start_within 30 s fire their tick of T0 + 1 s: N open slots."""
    clock = [T0]
    store = Store(etcd, keys, Snowflake(worker_id), lambda: clock[0])
    for i in range(N):
        spec = JobSpec(
            name=f"j{i}",
            command="true",
            schedules=[{"cron": "* * * * * *"}],
            deadlines={"start_within": 30},
        )
        await store.put_job("p", spec)
    session = await Session.open(etcd, 5)
    lead = await Election(etcd, keys, session, "n1").campaign()
    sched = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1")
    await sched._load()
    clock[0] += timedelta(seconds=1, milliseconds=5)
    await sched._fire_batch([("p", f"j{i}") for i in range(N)])
    return clock, store, session, lead, sched


async def _watcher(etcd, keys, store, lead, clock, sched) -> SlotWatcher:
    w = SlotWatcher(etcd, keys, store, lead, clock=lambda: clock[0], job_of=sched.cache.job_of)
    rev = (await etcd.range(keys.open_slots(), count_only=True)).revision
    await w.load(rev)
    return w


async def _records(etcd, keys) -> list[dict]:
    out = []
    for i in range(N):
        res = await etcd.range(keys.ticks("p", f"j{i}"))
        out += [json.loads(kv.value) for kv in res.kvs]
    return out


async def test_open_slots_settle_at_their_deadline_once_when_two_watchers_race(etcd, keys):
    clock, store, session, lead, sched = await _fired(etcd, keys, 11)
    records = await _records(etcd, keys)
    assert len(records) == N and all(r["outcome"] is None for r in records)
    assert (await etcd.range(keys.open_slots(), count_only=True)).count == N
    a = await _watcher(etcd, keys, store, lead, clock, sched)
    b = await _watcher(etcd, keys, store, lead, clock, sched)
    assert len(a.open) == len(b.open) == N

    # before the deadline: nothing is settled, each slot is due at its start_by
    clock[0] = T0 + timedelta(seconds=30)
    await asyncio.gather(*(a._guarded(k) for k in list(a.open)))
    assert all(r["outcome"] is None for r in await _records(etcd, keys))
    start_by = T0 + timedelta(seconds=31)
    assert {when for when, _, _ in a.due._heap if when > clock[0]} == {start_by}

    # at the deadline both race to settle every slot: one outcome each
    clock[0] = start_by
    await asyncio.gather(
        *(a._guarded(k) for k in list(a.open)), *(b._guarded(k) for k in reversed(list(b.open)))
    )
    records = await _records(etcd, keys)
    assert len(records) == N
    assert {r["outcome"] for r in records} == {"deadline_missed"}
    assert all("is pending" in r["reason"] for r in records)
    assert a.settled + b.settled == N
    assert (await etcd.range(keys.open_slots(), count_only=True)).count == 0
    alarms = await etcd.range(keys.slot_alarms(), count_only=True)
    assert alarms.count == N
    await session.close()


async def test_a_deposed_leaders_watcher_settles_nothing(etcd, keys):
    clock, store, session, lead, sched = await _fired(etcd, keys, 12)
    w = await _watcher(etcd, keys, store, lead, clock, sched)
    await etcd.revoke(session.lease_id)  # deposed, but this watcher does not know
    clock[0] = T0 + timedelta(seconds=40)
    with pytest.raises(LostOwnership):
        await w._guarded(next(iter(w.open)))
    assert all(r["outcome"] is None for r in await _records(etcd, keys))
    assert (await etcd.range(keys.open_slots(), count_only=True)).count == N
    await session.close()


async def test_a_run_event_during_a_look_is_not_lost(etcd, keys):
    """A look reads the run, the run starts meanwhile (its claim event), the look ends with
    nothing settled: the slot is looked at again at once, not at its deadline 30 s later."""
    clock, store, session, lead, sched = await _fired(etcd, keys, 13)
    w = await _watcher(etcd, keys, store, lead, clock, sched)
    key, slot = next(iter(w.open.items()))
    clock[0] = T0 + timedelta(seconds=2)
    await w._guarded(key)  # nothing to settle yet: due at its deadline
    assert key not in w.due.pop_due()
    w._dirty.discard(key)  # a look begins …
    w.on_run_moved(slot.run)  # … its run is claimed …
    w._rearm(key, T0 + timedelta(seconds=31))  # … and the look ends having read the old run
    assert key in w.due.pop_due()
    await session.close()
