"""A scheduling leader does not follow schedule states (D433), against a real etcd: it reads them
at its load and keeps what its own writes leave. A state written behind its back (nothing in the
product does; a hand-edit with etcdctl could) is found by the next tick's state CAS: the refused
write reads the state back, the tick is planned again on it and fired once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from cluster.election import Election
from cluster.ids import Snowflake
from cluster.models import JobSpec, Run
from cluster.session import Session
from cluster.store import Store
from nodes.leader.scheduler import Scheduler


async def fire_due(sched: Scheduler) -> int:
    due = sched.due.pop_due()
    await sched._fire_batch(due)
    return len(due)


async def test_a_state_written_behind_the_leaders_back_is_read_back_and_the_tick_fires_once(
    etcd, keys
):
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store(etcd, keys, Snowflake(7), lambda: clock[0])
    every_second = [{"cron": "* * * * * *"}]
    await store.put_job("p", JobSpec(name="a", command="true", schedules=every_second))
    session = await Session.open(etcd, 5)
    lead = await Election(etcd, keys, session, "n1", "scheduler").campaign()
    sched = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1")
    await sched._load()
    assert sched.cache.feed is None and ("p", "a") in sched.jobs
    clock[0] += timedelta(seconds=1, milliseconds=5)
    assert await fire_due(sched) == 1
    entry = sched.jobs[("p", "a")]
    kv = await etcd.get(keys.schedule_state("p", "a"))
    assert kv is not None and entry.state_rev == kv.mod_revision  # its own write, as written
    # behind its back: the same state again (its mod revision moves), with a mark
    behind = await etcd.put(keys.schedule_state("p", "a"), json.dumps({**entry.state, "x": 1}))
    assert entry.state_rev < behind  # the leader does not know
    clock[0] += timedelta(seconds=1)
    assert await fire_due(sched) == 1  # refused by the CAS: read back, planned again at once
    assert entry.state_rev == behind and entry.state.get("x") == 1
    clock[0] += timedelta(milliseconds=60)
    assert await fire_due(sched) == 1
    runs = await etcd.range(keys.runs("p"))
    ticks = sorted(Run.model_validate_json(kv.value).scheduled_at for kv in runs.kvs)
    assert len(ticks) == 2 and len(set(ticks)) == 2, ticks  # each tick once
    kv = await etcd.get(keys.schedule_state("p", "a"))
    assert kv is not None and entry.state_rev == kv.mod_revision > behind
    await session.close()
