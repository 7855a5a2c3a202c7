"""A notification rule added before a run ended is used for that run, whatever the leader's job
watch has delivered (D410).

The notifier hears of a finished run through the run index's watch and decides from the leader's
job cache, fed by another watch, whether anyone is to be told; only then does it read the job
(D368). A webhook added (200) just before the run ended could thus miss the run: the cache had
not heard of it yet. The notifier's watch now also carries the jobs (the run index's neighbour
prefix, one order for both), so it knows the newest edit of each job before each run's end and
trusts the cache only when the cache holds that edit; likewise the project's defaults, which it
keeps for 5 s (D413). Here the cache's watch is held back: the leader loaded its jobs and never
follows them (the rig of test_fencing).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import JobSpec, Run, parse_model
from nodes.leader.notifier import Notifier
from tests.conftest import wait_for
from tests.integration.test_fencing import Leader, P, Rig
from tests.integration.test_notifications import Receiver, allow_loopback


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


class Running:
    """A notifier following the run index (its real watch) beside a held-back job cache; counts
    the run documents it reads."""

    def __init__(self, rig: Rig, leader: Leader) -> None:
        config = SimpleNamespace(
            smtp_url=None, public_url=None, advertise_address="127.0.0.1", etcd=[]
        )
        node = SimpleNamespace(store=rig.store, etcd=rig.etcd, keys=rig.keys, config=config)
        self.rig = rig
        self.notifier = Notifier(node, leader.lead, leader.sched)  # type: ignore[arg-type]
        self.reads = 0
        get_run = rig.store.get_run

        async def counted(project: str, run_id: str) -> Run:
            self.reads += 1
            return await get_run(project, run_id)

        rig.store.get_run = counted  # type: ignore[method-assign]
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.notifier.run())
        cursor = self.rig.keys.notifier_cursor()
        await wait_for(lambda: self.rig.etcd.get(cursor), 30, what="notifier cursor written")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def finish(self, job: str) -> tuple[str, int]:
        """A run of ``job`` fails (as a worker's completion writes it); waits until the notifier
        has handled it (sent what it sends): the run's id and its end's revision."""
        run = await self.rig.store.trigger(P, job, {})
        run.status, run.node = "running", "w1"
        _, ops = self.rig.store.finish_ops(run, status="failed", exit_code=1)
        rev = (await self.rig.etcd.txn([], ops)).revision
        await wait_for(lambda: self.notifier._done >= rev, 30, what=f"run {run.id} handled")
        return run.id, rev


def spec(name: str, **kw: Any) -> JobSpec:
    return parse_model(JobSpec, {"name": name, "command": "false", **kw})


async def test_a_webhook_added_just_before_a_run_ended_is_sent_the_run(rig):
    await allow_loopback(rig.etcd, rig.keys)
    async with Receiver() as hook:
        await rig.store.put_job(P, spec("j"))
        leader = await rig.leader("n1")  # its cache: "j" has nobody to tell
        async with Running(rig, leader) as running:
            rule = {"on": ["failure"], "webhook": {"url": hook.url}}
            await rig.store.put_job(P, spec("j", notifications=[rule]))  # answered 200
            assert not leader.sched.cache.job_of((P, "j")).notifications  # not heard of
            run_id, _ = await running.finish("j")
            delivered = hook.delivered()
            assert [d["run"]["id"] for _, d in delivered] == [run_id]
            assert delivered[0][1]["event"] == "failure"


async def test_a_job_with_nobody_to_tell_costs_no_read_once_the_cache_holds_its_last_edit(rig):
    """The steady state stays read-free (D136): a read only for a run that ended after an edit
    the cache has not heard of yet."""
    await rig.store.put_job(P, spec("q"))
    leader = await rig.leader("n1")
    async with Running(rig, leader) as running:
        for _ in range(3):
            await running.finish("q")
        assert running.reads == 0
        await rig.store.put_job(P, spec("q", command="exit 2"))  # the cache has not heard
        await running.finish("q")
        assert running.reads == 1  # the cache is behind: read
        kv = await rig.etcd.get(rig.keys.job(P, "q"))
        leader.sched.cache.on_job(kv.key, kv.value, kv.mod_revision)  # the watch catches up
        for _ in range(3):
            await running.finish("q")
        assert running.reads == 1
        await wait_for(lambda: not running.notifier._edited, 30, what="edits the cache holds")


async def test_a_project_default_added_just_before_a_run_ended_is_sent_the_run(rig):
    """A job without rules of its own follows its project's defaults, which the notifier keeps
    for 5 s: one added (200) within them, just before a run ended, is used for it (D413)."""
    await allow_loopback(rig.etcd, rig.keys)
    async with Receiver() as hook:
        await rig.store.put_job(P, spec("d"))
        leader = await rig.leader("n1")
        async with Running(rig, leader) as running:
            await running.finish("d")  # the defaults are read and kept: none
            assert hook.requests == [] and running.reads == 0
            rule = {"on": ["failure"], "webhook": {"url": hook.url}}
            await rig.etcd.put(rig.keys.notification_defaults(P), json.dumps({"rules": [rule]}))
            run_id, _ = await running.finish("d")  # within the 5 s the defaults are kept
            assert [d["run"]["id"] for _, d in hook.delivered()] == [run_id]
            await running.finish("d")
            assert len(hook.delivered()) == 2
