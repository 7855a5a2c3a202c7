"""The leader's own claims (D444) against the worker's other paths, in-process against a real
etcd: the orphan check meeting a creation whose reply is still on its way (D448), and the
refusals that send a run through the queue instead of claiming it in its creation (a budget the
cache has not heard of, a job slot; a run_as user refused: tests/security/test_own_claim_run_as.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from cluster.budget_store import BudgetStore
from cluster.models import FINISHED, JobSpec, Run
from tests.conftest import wait_for
from tests.ownclaim_rig import (
    P,
    early_in_a_second,
    job,
    now,
    queued_ids,
    reserved_nothing,
    rig,
    runs_of,
)

__all__ = ["rig"]  # the fixture


async def test_an_orphan_scan_during_the_creations_reply_starts_each_run_once(
    etcd, keys, rig, tmp_path
):
    """The creation commits; its reply is held while the orphan check scans the claims (our
    lease, no execution yet) and reads the run; the reply then arrives and the run starts; the
    scan, resuming after its reads, must not start it a second time."""
    book = tmp_path / "ran"
    n = await rig.node("n1", orphans=True)
    w = n.worker
    await job(n.store, "j", f"echo $CRONMESH_RUN_ID >> {book}")
    sched = await n.lead("n1")
    txn, range_all, get_run = n.etcd.txn, n.etcd.range_all, n.store.get_run
    held, released, scanned, reached = (asyncio.Event() for _ in range(4))

    async def hold_the_reply(*args: Any, **kw: Any) -> Any:
        res = await txn(*args, **kw)
        if not held.is_set():
            held.set()
            await released.wait()
        return res

    async def scan(*args: Any, **kw: Any) -> Any:
        res = await range_all(*args, **kw)
        scanned.set()  # the loop over it runs on to its next wait before the test resumes
        return res

    firing: asyncio.Task[None]

    async def read_run(project: str, run_id: str) -> Any:
        reached.set()
        await released.wait()
        await wait_for(firing.done, 10, what="the reply's start")
        return await get_run(project, run_id)

    n.etcd.txn = hold_the_reply  # type: ignore[method-assign]
    n.etcd.range_all = scan  # type: ignore[method-assign]
    n.store.get_run = read_run  # type: ignore[method-assign]
    await early_in_a_second()
    firing = asyncio.create_task(sched.fire((P, "j")))
    await wait_for(held.is_set, 10, what="the creation applied, its reply held")
    w._orphan_check.set()
    await wait_for(scanned.is_set, 10, what="the orphan scan")
    # the scan either left the claims alone (reserved) or waits in the run's read
    released.set()
    await firing
    runs = await runs_of(etcd, keys, "j")
    assert runs and all(r.status == "running" and r.node == "n1" for r in runs)
    ids = {r.id for r in runs}
    await wait_for(lambda: reserved_nothing(w)(), 10, what="the reservations ended")

    async def done() -> bool:
        got = {r.id: r for r in await runs_of(etcd, keys, "j")}
        return all(got[i].status in FINISHED for i in ids)

    await wait_for(done, 20, what="the runs finished")
    started = [i for i in book.read_text().split() if i in ids]
    assert sorted(started) == sorted(ids), (reached.is_set(), started)  # once each


# -- the refusals: through the queue, never claimed in the creation ---------------------------


async def queued_not_claimed(etcd: Any, keys: Any, n: Any, name: str) -> list[Run]:
    """Every run of ``name`` is pending in the queue, with no claim, and nothing is reserved."""
    runs = await runs_of(etcd, keys, name)
    assert runs and all(r.status == "pending" and r.node is None for r in runs), runs
    assert {r.id for r in runs} <= await queued_ids(etcd, keys)
    for r in runs:
        assert await etcd.get(keys.claim(r.id)) is None
    assert not n.worker.running and reserved_nothing(n.worker)()
    return runs


async def test_a_budget_the_cache_has_not_heard_of_queues_the_run(etcd, keys, rig):
    """A budget is written after the worker's cache loaded, and the cache has not heard of it
    (its watch stopped here): the creation's compare on the budget documents refuses the claim,
    and the run is queued, never run outside the budget."""
    n = await rig.node("n1")
    budgets = n.tasks[1]  # the worker's budget cache: frozen as it is
    budgets.cancel()
    await asyncio.gather(budgets, return_exceptions=True)
    assert n.worker.budgets.ready
    await BudgetStore(etcd, keys, now).put({"name": "one", "concurrent": 1}, "test")
    spec = JobSpec(name="j", command="true", schedules=[{"cron": "* * * * * *"}], budgets=["one"])
    await n.store.put_job(P, spec)
    sched = await n.lead("n1")
    await early_in_a_second()
    await sched.fire((P, "j"))
    await queued_not_claimed(etcd, keys, n, "j")


@pytest.mark.parametrize("limit", [{"overlap": "forbid"}, {"max_parallel": 1}])
async def test_a_job_slot_queues_the_run_and_its_claim_takes_the_slot(etcd, keys, rig, limit):
    """A job with a slot (``overlap: forbid``, ``max_parallel``) settles it against every node:
    its runs go through the queue, and the claim from there takes the slot."""
    n = await rig.node("n1")
    spec = JobSpec(name="j", command="true", schedules=[{"cron": "* * * * * *"}], **limit)
    await n.store.put_job(P, spec)
    sched = await n.lead("n1")
    due = int(time.time()) + 1  # a job with a slot is planned when due, never ahead
    await wait_for(lambda: time.time() > due + 0.05, 5, interval=0.01, what="its first tick")
    await sched.fire((P, "j"))
    run = (await queued_not_claimed(etcd, keys, n, "j"))[0]
    key = n.store.queue_key(run)
    kv = await etcd.get(key)
    assert kv is not None
    await n.worker._claim(key, kv, run)
    slot = await etcd.get(keys.slot(P, "j", 0))
    assert slot is not None and slot.value.decode() == run.id
    assert slot.lease == n.session.lease_id
