"""A job disabled (answered) before its tick is not fired by a leader whose job watch is behind.

The leader plans ticks from its job cache, fed by the job watch; the user's ``enabled: false``
(or a changed schedule) is answered when etcd commits it, and the watch brings it later. A tick
falling due in between was fired under the old job: a run made after the 200 (D369). Every tick
transaction now compares the job document's mod revision with the cached copy's; a refused one
reads the job and plans again. Here the rig's leader runs no watches: its cache never hears."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import JobSpec
from tests.integration.test_fencing import EVERY_SECOND, P, Rig


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def test_a_job_disabled_before_its_tick_is_not_fired_by_a_stale_leader(rig):
    await rig.store.put_job(P, JobSpec(name="j", command="true", schedules=EVERY_SECOND))
    leader = await rig.leader("n1")
    rig.clock.advance(1.005)
    await leader.sched.fire((P, "j"))
    fired = len(await rig.runs("j"))
    assert fired >= 1  # the control: enabled, it fires
    await rig.store.patch_job(P, "j", {"enabled": False})  # answered; the cache has not heard
    assert leader.sched.cache.job_of((P, "j")).enabled
    rig.clock.advance(3)
    await leader.sched.fire((P, "j"))  # refused: the job moved; read, and planned again
    assert not leader.sched.cache.job_of((P, "j")).enabled
    await leader.sched.fire((P, "j"))
    assert len(await rig.runs("j")) == fired


async def test_jobs_due_together_on_a_stale_cache_fire_only_the_enabled_one(rig):
    """The batched path (several jobs in one transaction) refuses as a whole, then job by job."""
    for name in ("a", "b"):
        await rig.store.put_job(P, JobSpec(name=name, command="true", schedules=EVERY_SECOND))
    leader = await rig.leader("n1")
    await rig.store.patch_job(P, "b", {"enabled": False})
    rig.clock.advance(1.005)
    await leader.sched._fire_batch([(P, "a"), (P, "b")])
    assert await rig.runs("b") == []
    assert len(await rig.runs("a")) >= 1
