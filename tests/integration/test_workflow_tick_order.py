"""A workflow disabled (answered) before its tick starts no execution (D372).

The leader's workflow cache is fed by a watch that etcd does not order against the clock: a
workflow disabled just before its tick was fired once more under the old document. The tick now
reads the document and its transaction compares that revision. The rig's leader runs no watches,
so its cache never hears of the change; the second test changes the document between the tick's
read and its write."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.workflow_store import WorkflowStore
from cluster.workflows import WorkflowSpec
from nodes.leader import wftick
from tests.integration.test_fencing import EVERY_SECOND, P, Rig


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


def spec(enabled: bool = True) -> WorkflowSpec:
    return WorkflowSpec(
        name="w",
        tasks=[{"name": "t", "command": "true"}],
        schedules=EVERY_SECOND,
        enabled=enabled,
    )


async def executions(rig: Rig) -> int:
    return (await rig.etcd.range(rig.keys.executions(P), count_only=True)).count


async def test_a_workflow_disabled_before_its_tick_is_not_fired_by_a_stale_leader(rig):
    wfs = WorkflowStore(rig.store)
    await wfs.put_workflow(P, spec())
    leader = await rig.leader("n1")
    engine = leader.sched.workflows
    await engine._load()
    rig.clock.advance(1.005)
    await engine.fire((P, "w"))
    fired = await executions(rig)
    assert fired >= 1  # the control: enabled, it fires
    await wfs.put_workflow(P, spec(enabled=False))  # answered; the cache has not heard
    assert engine.workflows[(P, "w")].enabled
    rig.clock.advance(3)
    await engine.fire((P, "w"))
    assert await executions(rig) == fired


async def test_a_workflow_disabled_between_the_ticks_read_and_write_is_not_fired(rig, monkeypatch):
    wfs = WorkflowStore(rig.store)
    await wfs.put_workflow(P, spec())
    leader = await rig.leader("n1")
    engine = leader.sched.workflows
    await engine._load()
    real = wftick.workflow_slot_ops
    disabled = False

    async def disable_meanwhile(*args, **kwargs):
        nonlocal disabled
        if not disabled:
            disabled = True
            await wfs.put_workflow(P, spec(enabled=False))
        return await real(*args, **kwargs)

    monkeypatch.setattr(wftick, "workflow_slot_ops", disable_meanwhile)
    rig.clock.advance(1.005)
    await engine.fire((P, "w"))  # refused: the document moved after it was read
    assert disabled
    await engine.fire((P, "w"))  # read again: disabled, nothing to fire
    assert await executions(rig) == 0
