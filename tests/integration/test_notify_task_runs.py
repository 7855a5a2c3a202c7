"""The notifier decides on a workflow task's finished run from its key (D452).

A task's run carries no rules of its own (its snapshot is the task as a job document, without
``notifications``), so its rules are its project's defaults. With none, the notifier used to read
and decode the run's record for every task run (and the job key "@wf:task", which never exists)
to learn that nobody was to be told; it now answers from the key and the defaults it keeps. With
defaults, the run is read and they apply, as before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import JobSpec, Run
from cluster.workflows import task_job_name
from nodes.leader.notifier import Notifier
from tests.integration.test_fencing import P, Rig

HOOK = {"on": ["failure"], "webhook": {"url": "https://hooks.example/defaults"}}


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def _task_run(rig: Rig) -> Run:
    run = Run(
        id=rig.store.ids.next(),
        project=P,
        job=task_job_name("wf", "t"),
        source="manual",
        created_at=rig.clock(),
        snapshot=JobSpec(name="t", command="false"),
        execution=rig.store.ids.next(),
        task="t",
    )
    res = await rig.etcd.txn([], rig.store.create_run_ops(run))
    assert res.succeeded
    return run


async def _notifier(rig: Rig, reads: list[str]) -> Notifier:
    leader = await rig.leader("n1")
    node = SimpleNamespace(
        store=rig.store, etcd=rig.etcd, keys=rig.keys, config=SimpleNamespace(smtp_url=None)
    )
    notifier = Notifier(node, leader.lead, leader.sched)  # type: ignore[arg-type]
    get_run = rig.store.get_run

    async def counted(project: str, run_id: str) -> Any:
        reads.append(run_id)
        return await get_run(project, run_id)

    notifier.store = SimpleNamespace(get_run=counted)  # type: ignore[assignment]
    return notifier


async def test_a_task_run_with_no_project_defaults_is_not_read(rig: Rig) -> None:
    run = await _task_run(rig)
    reads: list[str] = []
    notifier = await _notifier(rig, reads)
    key = rig.keys.job_run(P, run.job, run.id)
    assert await notifier._plan(P, run.job, run.id, "failed", key) == []
    assert reads == []  # decided from the key: nobody to tell, no record read


async def test_a_task_run_gets_its_project_defaults(rig: Rig) -> None:
    await rig.etcd.put(rig.keys.notification_defaults(P), json.dumps({"rules": [HOOK]}))
    run = await _task_run(rig)
    reads: list[str] = []
    notifier = await _notifier(rig, reads)
    key = rig.keys.job_run(P, run.job, run.id)
    planned = await notifier._plan(P, run.job, run.id, "failed", key)
    assert [rule.webhook.url for rule, *_ in planned if rule.webhook] == [HOOK["webhook"]["url"]]
    assert [doc["id"] for _, _, doc, _ in planned] == [run.id]
    assert reads == [run.id]  # the run's document is read to be sent
