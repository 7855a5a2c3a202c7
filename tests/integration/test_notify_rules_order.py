"""A notification rule removed before a run ended is not sent, whatever the leader's job watch
has delivered (D368).

The notifier hears of a finished run through the run index's watch and took the job's rules from
the leader's job cache, fed by another watch that etcd does not order against it: a webhook
removed (200) before the run ended could still receive the run's document. Here the cache is never
told of the edit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import JobSpec, parse_model
from nodes.leader.notifier import Notifier
from tests.integration.test_fencing import P, Rig

HOOK = {"on": ["failure"], "webhook": {"url": "https://hooks.example/removed"}}


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def test_a_webhook_removed_before_the_run_ended_is_not_sent_the_run(rig):
    await rig.store.put_job(
        P, parse_model(JobSpec, {"name": "j", "command": "false", "notifications": [HOOK]})
    )
    leader = await rig.leader("n1")  # its cache holds the job with the webhook
    run = await rig.store.trigger(P, "j", {})
    node = SimpleNamespace(
        store=rig.store, etcd=rig.etcd, keys=rig.keys, config=SimpleNamespace(smtp_url=None)
    )
    notifier = Notifier(node, leader.lead, leader.sched)  # type: ignore[arg-type]
    key = rig.keys.job_run(P, "j", run.id)
    planned = await notifier._plan(P, "j", run.id, "failed", key)
    assert [rule.webhook.url for rule, *_ in planned] == [HOOK["webhook"]["url"]]  # control
    # the webhook is removed (answered), then the run ends; the cache has not heard
    await rig.store.put_job(
        P, parse_model(JobSpec, {"name": "j", "command": "false", "notifications": []})
    )
    assert leader.sched.cache.job_of((P, "j")).notifications
    assert await notifier._plan(P, "j", run.id, "failed", key) == []


async def test_project_defaults_removed_before_the_run_ended_are_not_sent_the_run(rig):
    """A job without rules of its own follows its project's defaults, which the notifier kept
    for 5 s: removed (200) just before a run ended, they were still used for it."""
    await rig.etcd.put(rig.keys.notification_defaults(P), json.dumps({"rules": [HOOK]}))
    await rig.store.put_job(P, parse_model(JobSpec, {"name": "d", "command": "false"}))
    leader = await rig.leader("n1")
    run = await rig.store.trigger(P, "d", {})
    node = SimpleNamespace(
        store=rig.store, etcd=rig.etcd, keys=rig.keys, config=SimpleNamespace(smtp_url=None)
    )
    notifier = Notifier(node, leader.lead, leader.sched)  # type: ignore[arg-type]
    key = rig.keys.job_run(P, "d", run.id)
    planned = await notifier._plan(P, "d", run.id, "failed", key)
    assert [rule.webhook.url for rule, *_ in planned] == [HOOK["webhook"]["url"]]  # control
    await rig.etcd.delete(rig.keys.notification_defaults(P))  # removed, within the 5 s
    assert await notifier._plan(P, "d", run.id, "failed", key) == []
