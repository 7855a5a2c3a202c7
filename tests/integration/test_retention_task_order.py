"""Execution retention deletes an execution's task runs before the execution (review of D318).
The groups were queued execution first: a leader killed between the transactions of a large
execution (3 ops per task run, 128 per transaction) left task runs whose execution was gone —
never pruned again, their history charges counted for good."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import parse_model
from cluster.workflow_store import new_execution
from cluster.workflows import Workflow, WorkflowSpec, task_job_name
from nodes.leader.retention import ExecutionRetention
from tests.integration.test_fencing import P, Rig

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def test_a_kill_mid_prune_leaves_the_execution_to_finish_the_prune(rig):
    tasks = [{"name": f"t{i}", "command": "true"} for i in range(60)]  # 180 ops: 2 transactions
    spec = parse_model(WorkflowSpec, {"name": "big", "tasks": tasks})
    wf = Workflow(**spec.model_dump(), project=P, created_at=NOW, updated_at=NOW,
                  active_since=NOW)  # fmt: skip
    ex = new_execution(rig.store, wf, parameters={})
    ex.status, ex.finished_at = "succeeded", NOW
    runs = []
    for name, t in ex.tasks.items():
        t.status, t.run_id = "succeeded", rig.store.ids.next()
        runs.append((task_job_name("big", name), t.run_id))
    await rig.etcd.put(rig.keys.execution(P, ex.id), ex.model_dump_json())
    await rig.etcd.put(rig.keys.workflow_execution(P, "big", ex.id), "")
    await rig.etcd.put(rig.keys.history_charge(P, ex.id), "100")
    for job, run_id in runs:
        await rig.etcd.put(rig.keys.run(P, run_id), json.dumps({"id": run_id}))
        await rig.etcd.put(rig.keys.job_run(P, job, run_id), "succeeded")
        await rig.etcd.put(rig.keys.history_charge(P, run_id), "10")
    leader = await rig.leader("n1")
    retention = ExecutionRetention(
        rig.etcd, rig.keys, rig.store, leader.lead, workflow_of=lambda wk: None
    )
    real_txn, sent = rig.etcd.txn, []

    async def killed_after_one(compare, success, *args, **kw):
        if any(op.HasField("request_delete_range") for op in success):  # a prune's write
            if sent:
                raise ConnectionError("the leader died here")
            sent.append(1)
        return await real_txn(compare, success, *args, **kw)

    rig.etcd.txn = killed_after_one  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await retention.prune()
    rig.etcd.txn = real_txn  # type: ignore[method-assign]
    assert await rig.etcd.get(rig.keys.execution(P, ex.id)) is not None  # still there to find
    await retention.prune()  # the next leader's pass
    assert (await rig.etcd.range(rig.keys.runs(P))).kvs == []
    assert (await rig.etcd.range(rig.keys.history_charges(P))).kvs == []
    assert await rig.etcd.get(rig.keys.execution(P, ex.id)) is None
