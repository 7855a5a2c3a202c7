"""The dependency waiter's writes, raced on purpose against a real etcd (D294): a deposed leader
releases no waiting slot (fenced), and a waiter that looks with a stale view after another
released the slot creates no second run (the waiting key's mod revision)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from cluster.errors import LostOwnership
from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import JobSpec, parse_model
from nodes.leader.depwait import DependencyWaiter
from tests.integration.test_fencing import EVERY_SECOND, P, Rig


@pytest.fixture
async def deps_rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def _load(rig: Rig, waiter: DependencyWaiter) -> list[str]:
    res = await rig.etcd.range(rig.keys.waitings())
    for kv in res.kvs:
        waiter._on_waiting(kv.key, kv.value, kv.mod_revision)
    return [kv.key for kv in res.kvs]


async def test_a_deposed_leader_releases_no_waiting_slot_and_a_stale_look_none_twice(deps_rig):
    rig = deps_rig
    await rig.store.put_job(P, JobSpec(name="up", command="true"))  # no slots: always met
    down = {
        "name": "down",
        "command": "true",
        "schedules": [{**EVERY_SECOND[0], "depends_on": [{"job": "up", "window": "1s"}]}],
    }
    await rig.store.put_job(P, parse_model(JobSpec, down))
    old = await rig.leader("old")
    rig.clock.advance(1.005)
    await old.sched.fire((P, "down"))
    assert await rig.runs() == []  # held: a waiting key instead of a run
    [key] = await _load(rig, old.sched.slots.deps)
    minted = json.loads((await rig.etcd.get(key)).value)["run"]["id"]
    await old.depose(rig.etcd)
    with pytest.raises(LostOwnership):
        await old.sched.slots.deps._look(key)
    assert await rig.runs() == [] and await rig.etcd.get(key) is not None
    new = await rig.leader("new")
    stale = DependencyWaiter(
        rig.etcd, rig.keys, rig.store, new.lead, clock=rig.clock, job_of=new.sched.cache.job_of
    )
    await _load(rig, stale)  # the same view, read before the release
    await _load(rig, new.sched.slots.deps)
    await new.sched.slots.deps._look(key)
    assert [r.id for r in await rig.runs("down")] == [minted]
    assert await rig.etcd.get(key) is None
    await stale._look(key)  # its compare fails: no second run
    assert [r.id for r in await rig.runs("down")] == [minted]
    tick = json.loads((await rig.etcd.range(rig.keys.ticks(P, "down"))).kvs[0].value)
    assert tick["run"] == minted and tick["outcome"] == "fired" and not tick.get("waiting")
