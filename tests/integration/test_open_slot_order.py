"""An open slot of a job the slot watcher's cache has not heard of yet is settled, not dropped.

With scheduler shards (D301, D302) a job's ticks are written by its shard's leader, but its open
slots (D230) are settled by shard 0's leader, whose job cache is fed by its own job watch, which
etcd does not order against its open-slot watch. A job created with deadlines and fired at once
by its shard leader could reach shard 0's slot watcher as an open slot first: the watcher took
the job for deleted and removed the slot, so its deadlines were never judged — no
``deadline_missed``, no alarm, no notification (D367). Here the watcher's cache never hears of
the job."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import JobSpec, parse_model
from tests.integration.test_fencing import EVERY_SECOND, P, Rig


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def test_an_open_slot_of_a_job_the_cache_lacks_is_settled_not_dropped(rig):
    job = {
        "name": "late",
        "command": "true",
        "schedules": EVERY_SECOND,
        "deadlines": {"start_within": 1},
    }
    await rig.store.put_job(P, parse_model(JobSpec, job))
    leader = await rig.leader("n1")
    rig.clock.advance(1.005)
    await leader.sched.fire((P, "late"))  # no worker: its run stays pending
    watcher = leader.sched.slots
    opened = (await rig.etcd.range(rig.keys.open_slots(P, "late"))).kvs
    assert opened, "the tick opened no slot"
    for kv in opened:
        watcher._on_open(kv.key, kv.value, kv.mod_revision)
    watcher.job_of = lambda jk: None  # shard 0's cache, whose job watch has not delivered it
    rig.clock.advance(5)  # every start deadline has passed
    for kv in opened:
        await watcher._settle(kv.key)
    assert (await rig.etcd.range(rig.keys.open_slots(P, "late"))).kvs == []
    ticks = (await rig.etcd.range(rig.keys.ticks(P, "late"))).kvs
    settled = [json.loads(kv.value) for kv in ticks]
    assert settled and all(t["outcome"] == "deadline_missed" for t in settled), settled


async def test_an_open_slot_of_a_deleted_job_still_goes_with_it(rig):
    """The positive control: a job that etcd does not hold either is gone, its slots with it."""
    job = {"name": "gone", "command": "true", "schedules": EVERY_SECOND}
    await rig.store.put_job(P, parse_model(JobSpec, {**job, "deadlines": {"start_within": 1}}))
    leader = await rig.leader("n1")
    rig.clock.advance(1.005)
    await leader.sched.fire((P, "gone"))
    watcher = leader.sched.slots
    opened = (await rig.etcd.range(rig.keys.open_slots(P, "gone"))).kvs
    for kv in opened:
        watcher._on_open(kv.key, kv.value, kv.mod_revision)
    await rig.etcd.delete(rig.keys.job(P, "gone"))  # by hand: the open slots stay in etcd
    watcher.job_of = lambda jk: None
    for kv in opened:
        await watcher._settle(kv.key)
    assert (await rig.etcd.range(rig.keys.open_slots(P, "gone"))).kvs == []


async def test_a_freshness_period_switched_off_unseen_raises_no_alarm(rig):
    """``expected_every`` removed (answered) before a period's deadline: the slot watcher, whose
    cache still has it, must not record the period stale, alarm and notify (D367)."""
    await rig.store.put_job(
        P, parse_model(JobSpec, {"name": "fed", "command": "true", "expected_every": 60})
    )
    leader = await rig.leader("n1")
    watcher = leader.sched.slots
    await watcher._freshness((P, "fed"))  # its first period opens
    opened = (await rig.etcd.range(rig.keys.open_slots(P, "fed"))).kvs
    assert len(opened) == 1
    watcher._on_open(opened[0].key, opened[0].value, opened[0].mod_revision)
    await rig.store.patch_job(P, "fed", {"expected_every": 0})  # the cache has not heard
    assert watcher.job_of((P, "fed")).expected_every
    rig.clock.advance(120)  # the period's deadline has passed, no run succeeded
    await watcher._settle(opened[0].key)
    assert (await rig.etcd.range(rig.keys.open_slots(P, "fed"))).kvs == []
    ticks = [json.loads(kv.value) for kv in (await rig.etcd.range(rig.keys.ticks(P, "fed"))).kvs]
    assert not any(t.get("outcome") == "deadline_missed" for t in ticks), ticks
    assert await rig.etcd.get(rig.keys.slot_alarm(P, "fed")) is None
