"""A waiting slot is released under its job as it is at release, also when the leader's job watch
has not delivered the edit yet (D366, the ordering class of D339 in the dependency waiter).

The waiter is woken by its upstreams (their records and runs); the job's edit reaches the
leader's cache by another watch, which etcd does not order against those. Here the cache is never
told of the edit (nothing feeds it: the rig's leader runs no watches), as if that watch were late:
the edit was answered before the upstream moved, so the run must carry it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import JobSpec, parse_model
from nodes.leader import depwait_look
from tests.integration.test_depends_stranded import _held, _record
from tests.integration.test_fencing import EVERY_SECOND, P, Rig


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


def _down(**changes: Any) -> JobSpec:
    spec = {
        "name": "down",
        "command": "true",
        "schedules": [{**EVERY_SECOND[0], "depends_on": [{"job": "up"}], "max_wait": "60s"}],
    }
    return parse_model(JobSpec, {**spec, **changes})


async def _upstream_met(rig: Rig) -> None:
    """The upstream now has no slot in the window: the waiting slot's condition is met."""
    up = json.loads((await rig.etcd.get(rig.keys.job(P, "up"))).value)
    up["schedules"] = []
    await rig.etcd.put(rig.keys.job(P, "up"), json.dumps(up))


async def test_an_edit_the_job_watch_has_not_delivered_applies_at_release(rig):
    leader, key = await _held(rig)
    await rig.store.put_job(P, _down(command="echo edited"))  # answered; the cache never hears
    assert leader.sched.cache.job_of((P, "down")).command == "true"
    await _upstream_met(rig)
    await leader.sched.slots.deps._look(key)
    [run] = await rig.runs("down")
    assert run.snapshot.command == "echo edited"


async def test_a_job_disabled_before_its_upstream_finished_is_not_released(rig):
    leader, key = await _held(rig)
    await rig.store.put_job(P, _down(enabled=False))
    assert leader.sched.cache.job_of((P, "down")).enabled
    await _upstream_met(rig)
    await leader.sched.slots.deps._look(key)
    assert await rig.runs("down") == []
    assert (await _record(rig))["outcome"] == "disabled"


async def test_an_edit_between_the_read_and_the_release_refuses_the_release(rig, monkeypatch):
    """The release compares the job document it read: an edit that lands while the upstreams are
    judged makes it fail, and the next look releases under the edit."""
    leader, key = await _held(rig)
    await _upstream_met(rig)
    judge = depwait_look.judge_waiting

    async def edit_meanwhile(*args: Any) -> Any:
        monkeypatch.setattr(depwait_look, "judge_waiting", judge)
        await rig.store.put_job(P, _down(command="echo edited"))
        return await judge(*args)

    monkeypatch.setattr(depwait_look, "judge_waiting", edit_meanwhile)
    await leader.sched.slots.deps._look(key)
    assert await rig.runs("down") == []  # refused: the job moved after it was read
    assert await rig.etcd.get(key) is not None
    await leader.sched.slots.deps._look(key)
    [run] = await rig.runs("down")
    assert run.snapshot.command == "echo edited"
