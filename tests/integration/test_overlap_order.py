"""``overlap: forbid`` decides on the job's active runs as they are, not as the leader's actives
watch last told it (D370).

The leader counts a job's active runs from its actives watch; a run that ended, or a manual run
created, is answered before that watch brings it. A tick falling due in between was skipped
though its run had ended (a run that should exist never did), or fired though a manual run was
active. Every tick of a ``forbid`` or ``replace`` job now compares the active keys it counted
(each still there, none created since); a refused one reads them. Here the rig's leader runs no
watches: its cache never hears."""

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


def _forbid() -> JobSpec:
    return JobSpec(name="f", command="true", schedules=EVERY_SECOND, overlap="forbid")


async def test_a_run_that_ended_unseen_does_not_skip_the_next_tick(rig):
    await rig.store.put_job(P, _forbid())
    leader = await rig.leader("n1")
    rig.clock.advance(1.005)
    await leader.sched.fire((P, "f"))
    first = [r for r in await rig.runs("f") if r.status == "pending"]
    assert first and leader.sched.cache.active[(P, "f")] == {r.id for r in first}
    for run in first:  # it ends (here: cancelled before it started); the cache has not heard
        stored = await rig.store.get_run_kv(P, run.id)
        assert await rig.store.cancel_pending(stored, "test") is not None
    rig.clock.advance(2)
    await leader.sched.fire((P, "f"))  # refused: an active key it counted is gone; read
    await leader.sched.fire((P, "f"))
    later = [r for r in await rig.runs("f") if r.id not in {f.id for f in first}]
    assert later, "no tick after the run ended"
    assert any(r.status == "pending" for r in later), [(r.status, r.error) for r in later]


async def test_a_manual_run_created_unseen_makes_the_tick_skip(rig):
    await rig.store.put_job(P, _forbid())
    leader = await rig.leader("n1")
    manual = await rig.store.trigger(P, "f", {})  # answered; the cache has not heard
    assert not leader.sched.cache.active.get((P, "f"))
    rig.clock.advance(1.005)
    await leader.sched.fire((P, "f"))  # refused: an active key was created since; read
    await leader.sched.fire((P, "f"))
    ticks = [r for r in await rig.runs("f") if r.id != manual.id]
    assert ticks and all(r.status == "skipped" for r in ticks), [r.status for r in ticks]


async def test_forbid_jobs_due_together_are_written_one_by_one_under_the_guard(rig):
    """The batched path: a ``forbid`` job goes in a transaction of its own (its refusal must not
    split a batch), with the same guard."""
    await rig.store.put_job(P, _forbid())
    await rig.store.put_job(
        P, JobSpec(name="g", command="true", schedules=EVERY_SECOND, overlap="forbid")
    )
    leader = await rig.leader("n1")
    manual = await rig.store.trigger(P, "f", {})  # the cache has not heard
    rig.clock.advance(1.005)
    await leader.sched._fire_batch([(P, "f"), (P, "g")])
    await leader.sched._fire_batch([(P, "f"), (P, "g")])
    ticks = [r for r in await rig.runs("f") if r.id != manual.id]
    assert ticks and all(r.status == "skipped" for r in ticks), [r.status for r in ticks]
    assert any(r.status == "pending" for r in await rig.runs("g"))
