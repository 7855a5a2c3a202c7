"""A deleted workflow's held slots go with it (review of D296): before, ``delete_workflow`` left
``waiting/<project>/@<workflow>/…`` behind. Each held key kept the execution to create — with the
deleted definition's snapshot — so a workflow deleted and created again under the same name and
schedule had its next look release the OLD tasks' commands; until then the keys counted against
the project's waiting quota."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from cluster.depends_plan import hold_execution
from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import JobSpec, parse_model
from cluster.workflow_store import WorkflowStore, new_execution
from cluster.workflows import WorkflowSpec
from nodes.leader.depwait import DependencyWaiter
from tests.integration.test_fencing import P, Rig

SLOT = datetime(2026, 1, 1, 6, tzinfo=UTC)


def wf_spec(command: str) -> WorkflowSpec:
    doc = {
        "name": "etl",
        "tasks": [{"name": "load", "command": command}],
        "schedules": [{"cron": "0 6 * * *", "depends_on": [{"job": "up", "window": "1h"}]}],
    }
    return parse_model(WorkflowSpec, doc)


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def test_a_deleted_workflow_leaves_no_held_slot_to_release_its_old_tasks(rig):
    await rig.store.put_job(P, JobSpec(name="up", command="true"))  # no slots: always met
    wfs = WorkflowStore(rig.store)
    wf, _ = await wfs.put_workflow(P, wf_spec("echo OLD-DEFINITION"))
    fp = wf.schedules[0].fingerprint()
    tick_key = rig.keys.workflow_tick(P, "etl", fp, int(SLOT.timestamp() * 1000))
    ex = new_execution(rig.store, wf, parameters={}, source="schedule", scheduled_at=SLOT)
    ops = hold_execution(rig.keys, wf, ex, tick_key, waiting=(0, 0))
    assert ops is not None
    await rig.etcd.txn([], ops)  # the engine's held slot (D296)
    held = await rig.etcd.range(rig.keys.waitings(P))
    assert [kv.key for kv in held.kvs] == [rig.keys.waiting(P, "@etl", tick_key.rsplit("/")[-1])]

    leader = await rig.leader("n1")
    waiter: DependencyWaiter = leader.sched.slots.deps
    for kv in held.kvs:  # the waiter's map, as its watch had it before the delete
        waiter._on_waiting(kv.key, kv.value, kv.mod_revision)

    await wfs.delete_workflow(P, "etl")
    assert (await rig.etcd.range(rig.keys.waitings(P))).kvs == []  # gone with the workflow
    # created again at once, same name and schedule, new tasks
    await wfs.put_workflow(P, wf_spec("echo NEW-DEFINITION"))
    await waiter._look(held.kvs[0].key)  # the look the next upstream event would cause
    executions = await rig.etcd.range(rig.keys.executions(P))
    assert executions.kvs == [], [kv.value for kv in executions.kvs]


async def test_a_workflow_edited_while_its_slot_waits_runs_as_it_is_now(rig):
    """The same for an edit (D334): the held execution kept the definition of its tick."""
    await rig.store.put_job(P, JobSpec(name="up", command="true"))
    wfs = WorkflowStore(rig.store)
    wf, _ = await wfs.put_workflow(P, wf_spec("echo OLD-DEFINITION"))
    fp = wf.schedules[0].fingerprint()
    tick_key = rig.keys.workflow_tick(P, "etl", fp, int(SLOT.timestamp() * 1000))
    ex = new_execution(rig.store, wf, parameters={}, source="schedule", scheduled_at=SLOT)
    await rig.etcd.txn([], hold_execution(rig.keys, wf, ex, tick_key, waiting=(0, 0)) or [])
    await wfs.put_workflow(P, wf_spec("echo NEW-DEFINITION"))
    leader = await rig.leader("n1")
    waiter: DependencyWaiter = leader.sched.slots.deps
    held = await rig.etcd.range(rig.keys.waitings(P))
    for kv in held.kvs:
        waiter._on_waiting(kv.key, kv.value, kv.mod_revision)
    await waiter._look(held.kvs[0].key)
    [kv] = (await rig.etcd.range(rig.keys.executions(P))).kvs
    doc = json.loads(kv.value)
    assert doc["id"] == ex.id
    assert doc["snapshot"]["tasks"][0]["command"] == "echo NEW-DEFINITION"
