"""A freeze that refuses a batch of tick writes reloads the leader's rules once, not once per
job (D339): the jobs retried one by one each find the marker no newer than the snapshot the
first retry took."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cluster.calendar_store import CalendarStore
from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import JobSpec
from nodes.leader.rulecache import RuleCache
from tests.integration.test_fencing import EVERY_SECOND, P, Rig


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def test_a_refused_batch_reloads_the_rules_once(rig, monkeypatch):
    names = ["a", "b", "c", "d"]
    for name in names:
        await rig.store.put_job(P, JobSpec(name=name, command="true", schedules=EVERY_SECOND))
    leader = await rig.leader("n1")  # runs no watches: it hears of the freeze only by refusal
    loads = []
    real = RuleCache.load

    async def counted(self, rev):
        loads.append(rev)
        await real(self, rev)

    monkeypatch.setattr(RuleCache, "load", counted)
    await CalendarStore(rig.etcd, rig.keys, rig.clock).freeze("upgrade", "admin")
    rig.clock.advance(1.005)
    await leader.sched._fire_batch([(P, n) for n in names])
    assert len(loads) == 1, loads
    assert leader.sched.rules.rules.freeze is not None
    for name in names:  # planned again on the new snapshot: frozen, no run
        await leader.sched.fire((P, name))
    assert await rig.runs() == []
