"""A budget written before a run is queued holds that run, whichever watch a worker hears first.

A worker follows the queue and the budgets with two watches, and etcd orders events within one
watch only: a run queued just after a budget was created (its 200 answered) can reach a worker
whose budget watch has not delivered the budget yet. The worker then saw no budget for the run
and claimed it outside the limit. Every claim now compares the budget documents unchanged since
the worker's cache (D365). The tests stop the worker's budget watch after its first read, so
the worker hears of the budget only through that compare."""

from __future__ import annotations

import asyncio

from cluster.ids import Snowflake
from cluster.store import Store
from nodes.worker.budgets import Plan
from nodes.worker.worker import Worker
from tests.conftest import wait_for
from tests.integration import test_claims
from tests.integration.test_budget_claims import budget
from tests.integration.test_claims import P, Rig, idle, ledger, ledger_command, now, put_job, queued

rig = test_claims.rig  # the fixture: workers in this process, each with its own lease


async def deaf(rig: Rig, name: str) -> Worker:
    """A worker whose budget cache was read once and is then never told of a change."""
    w = await rig.worker(name)
    loop = asyncio.create_task(w.budgets.run())
    await wait_for(lambda: w.budgets.ready, 10, what=f"{name}'s budgets")
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    return w


async def test_a_budget_created_before_the_runs_holds_them_on_a_worker_that_has_not_heard(
    etcd, keys, rig, tmp_path
):
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(31), now)
    await put_job(store, name="j", command=ledger_command(book, gate=True), tags=["gpu"])
    w = await deaf(rig, "a")
    # the budget is written (answered), then two runs are queued
    await budget(etcd, keys, {"name": "gpu", "concurrent": 1, "match": {"tags": ["gpu"]}})
    r1, r2 = await store.trigger(P, "j", {}), await store.trigger(P, "j", {})
    k1, kv1, run1 = await queued(etcd, keys, r1.id)
    k2, kv2, run2 = await queued(etcd, keys, r2.id)
    assert w.budgets.look(run1, now()) is None  # the worker has not heard of the budget
    await w._claim(k1, kv1, run1, budget=None)
    # the claim was refused, and the worker read the budgets then
    assert not w.running and "gpu" in w.budgets.docs
    plan = w.budgets.look(run1, now())
    assert isinstance(plan, Plan) and plan.slots == [keys.budget_slot("gpu", 0)]
    await w._claim(k1, kv1, run1, budget=plan)
    assert list(w.running) == [r1.id]
    await wait_for(lambda: len(ledger(book)) >= 1, 10, what="the first run's process")
    # the second run is held back by the budget: one at a time
    held = w.budgets.look(run2, now())
    assert not isinstance(held, Plan) and held is not None
    assert held.reason == "budget gpu: 1/1 running"
    (tmp_path / "ledger.gate-a").touch()
    await wait_for(lambda: idle(w), 10, what="the first run to end")
    assert [r for r, _, _ in ledger(book)] == [r1.id]
    assert (await store.get_run(P, r2.id)).status == "pending"


async def test_a_budget_named_by_a_job_written_after_it_holds_the_jobs_runs(
    etcd, keys, rig, tmp_path
):
    """The budget, then a job naming it, then its runs: three answered writes in that order."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(32), now)
    w = await deaf(rig, "a")
    await budget(etcd, keys, {"name": "one", "concurrent": 1})
    await put_job(store, name="j", command=ledger_command(book, gate=True), budgets=["one"])
    r1, r2 = await store.trigger(P, "j", {}), await store.trigger(P, "j", {})
    k1, kv1, run1 = await queued(etcd, keys, r1.id)
    k2, kv2, run2 = await queued(etcd, keys, r2.id)
    for key, kv, run in ((k1, kv1, run1), (k2, kv2, run2)):
        for _ in range(2):  # a refused claim is looked at again, as dispatch does
            look = w.budgets.look(run, now())
            if look is not None and not isinstance(look, Plan):
                break  # held back
            await w._claim(key, kv, run, budget=look)
            if run.id in w.running:
                break
    assert list(w.running) == [r1.id]
    assert (await store.get_run(P, r2.id)).status == "pending"
    (tmp_path / "ledger.gate-a").touch()
    await wait_for(lambda: idle(w), 10, what="the first run to end")
    assert [r for r, _, _ in ledger(book)] == [r1.id]


async def test_a_budget_heard_of_between_the_look_and_the_claim_holds_the_run(
    etcd, keys, rig, tmp_path
):
    """The dispatch looked (no budget applies: the worker has not heard of it yet) and spawned
    the claim; the budget watch's turn came before the claim's (a loaded node's loop runs both
    in one go) and the cache learnt of the budget. The claim compares the documents as the look
    read them: it is refused, and the run is looked at again, inside the budget. Compared as the
    cache stood when the claim went out, the run started uncounted (CI, stop 35: 4 starts in a
    window of 2; D469)."""
    store = Store(etcd, keys, Snowflake(32), now)
    await put_job(store, name="j", command="true", tags=["api"])
    w = await deaf(rig, "a")
    rate = {"name": "api", "starts": {"per": "hour", "limit": 1}, "match": {"tags": ["api"]}}
    await budget(etcd, keys, rate)
    doc = await etcd.get(keys.budget("api"))
    assert doc is not None
    r1 = await store.trigger(P, "j", {})
    k1, kv1, run1 = await queued(etcd, keys, r1.id)
    w._on_queue(k1, kv1)  # as the queue watch delivers it
    w._dispatch()  # the look (no budget) and the claim spawned, not yet run
    assert k1 in w.claiming
    w.budgets._apply(doc.key, doc)  # as the budget watch delivers it, before the claim's turn
    w.budgets.docs_revision = doc.mod_revision
    await wait_for(lambda: not w.claiming, 10, what="the claim's answer")
    assert not w.running and (await store.get_run(P, r1.id)).status == "pending"
    plan = w.budgets.look(run1, now())
    assert isinstance(plan, Plan) and plan.budgets == ["api"]
