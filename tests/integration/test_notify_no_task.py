"""The notifier starts no task for a finished run when it knows, without a read, that nobody is
to be told (D455), on a real etcd with a leader's job cache.

It started one per final run-index put, and in the common case (no rules) the task's first step
found nothing to do. Now the event's handler asks the same question synchronously: the job as
the cache holds it (once it holds the job's last edit before the run's end, D410) and the
project's defaults as kept (fresh and holding their last edit, D413). Anything it cannot answer
so goes to a task, as before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import JobSpec, parse_model
from cluster.workflows import task_job_name
from nodes.leader.notifier import Notifier
from tests.integration.test_fencing import P, Rig

HOOK = {"on": ["failure"], "webhook": {"url": "https://hooks.example/x"}}


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def _notifier(rig: Rig) -> Notifier:
    leader = await rig.leader("n1")
    node = SimpleNamespace(
        store=rig.store, etcd=rig.etcd, keys=rig.keys, config=SimpleNamespace(smtp_url=None)
    )
    notifier = Notifier(node, leader.lead, leader.sched)  # type: ignore[arg-type]
    sent: list[str] = []

    async def deliver(rule: object, event: str, doc: dict[str, object], delivery: str) -> None:
        sent.append(delivery)  # what would be sent is not this test's: only the tasks

    notifier.sender.deliver = deliver  # type: ignore[method-assign]
    return notifier


def _tasks(notifier: Notifier) -> int:
    return sum(1 for _, task in notifier._pending if task is not None)


async def _finish(notifier: Notifier, rig: Rig, job: str) -> int:
    """A finished run's index event for ``job``: how many tasks it started."""
    before = _tasks(notifier)
    run = await rig.store.trigger(P, job, {}) if not job.startswith("@") else None
    run_id = run.id if run is not None else rig.store.ids.next()
    notifier._start(1, rig.keys.job_run(P, job, run_id), "failed")
    started = _tasks(notifier) - before
    for _, task in notifier._pending:
        if task is not None:
            await task
    notifier._pending.clear()
    return started


async def test_a_run_nobody_is_told_of_starts_no_task(rig: Rig) -> None:
    await rig.store.put_job(P, parse_model(JobSpec, {"name": "quiet", "command": "true"}))
    await rig.store.put_job(
        P, parse_model(JobSpec, {"name": "told", "command": "false", "notifications": [HOOK]})
    )
    await rig.store.put_job(
        P, parse_model(JobSpec, {"name": "muted", "command": "true", "notifications": []})
    )
    notifier = await _notifier(rig)
    assert await _finish(notifier, rig, "muted") == 0  # no rules of its own: known at once
    assert await _finish(notifier, rig, "quiet") == 1  # the defaults are not known yet: read
    assert await _finish(notifier, rig, "quiet") == 0  # kept (none): known at once
    assert await _finish(notifier, rig, task_job_name("wf", "t")) == 0  # a task: the defaults
    assert await _finish(notifier, rig, "told") == 1  # a rule: the task decides what to send
    # an edit of the job before the run's end that the cache does not hold yet: asked later
    notifier._edited[(P, "muted")] = 10**9
    assert await _finish(notifier, rig, "muted") == 1
    # defaults added, then seen by the notifier's watch (D413): the kept ones are not current
    await rig.etcd.put(rig.keys.notification_defaults(P), json.dumps({"rules": [HOOK]}))
    notifier._edited[(P, "")] = 10**9
    assert await _finish(notifier, rig, "quiet") == 1
