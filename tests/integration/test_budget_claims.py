"""The compares budgets add to a claim, each raced on purpose against a real etcd (D275).

As in test_claims.py, every test sets up its race directly: worker B decides with a view of the
budget that worker A's claim has just made stale, then claims. Each names the compare it rests
on; ``python -m tests.mutations`` removes it and checks that the test fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cluster.budget_store import BudgetStore
from cluster.budgets import Wait, Window, window_start
from cluster.etcd import Etcd, Op
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.store import Store, dumps
from nodes.worker.budgets import Plan
from nodes.worker.worker import Worker
from tests.conftest import wait_for
from tests.integration import test_claims
from tests.integration.test_claims import (
    P,
    Rig,
    idle,
    ledger,
    ledger_command,
    now,
    put_job,
    queued,
)

rig = test_claims.rig  # the fixture: workers in this process, each with its own lease


async def gated(rig: Rig, name: str, clock: Callable[[], datetime] = now) -> Worker:
    """A worker whose budget cache is loaded (its watch runs; nothing dispatches by itself)."""
    w = await rig.worker(name, clock=clock)
    rig.loops.append(asyncio.create_task(w.budgets.run()))
    await wait_for(lambda: w.budgets.ready, 10, what=f"{name}'s budgets")
    return w


async def budget(etcd: Etcd, keys: Keys, doc: dict[str, object]) -> None:
    await BudgetStore(etcd, keys, now).put(doc, "test")


async def test_two_workers_that_picked_the_same_budget_slot_never_both_run(
    etcd, keys, rig, tmp_path
):
    """``concurrent: 1`` over two jobs: B chose slot 0 before A's claim took it; the claim
    compares the slot key absent, so B's claim fails and only A's run starts."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(21), now)
    await budget(etcd, keys, {"name": "one", "concurrent": 1})
    for job in ("j1", "j2"):
        await put_job(store, name=job, command=ledger_command(book, gate=True), budgets=["one"])
    a, b = await gated(rig, "a"), await gated(rig, "b")
    r1, r2 = await store.trigger(P, "j1", {}), await store.trigger(P, "j2", {})
    k1, kv1, run1 = await queued(etcd, keys, r1.id)
    k2, kv2, run2 = await queued(etcd, keys, r2.id)
    plan_a, plan_b = a.budgets.look(run1, now()), b.budgets.look(run2, now())
    assert isinstance(plan_a, Plan) and isinstance(plan_b, Plan)
    assert plan_b.slots == [keys.budget_slot("one", 0)]  # B's view: slot 0 is free
    await a._claim(k1, kv1, run1, budget=plan_a)
    await b._claim(k2, kv2, run2, budget=plan_b)
    assert list(a.running) == [r1.id] and not b.running
    await wait_for(lambda: len(ledger(book)) >= 1, 10, what="a's process")
    await asyncio.sleep(0.3)  # B's process would have started by now
    assert [(r, n) for r, _, n in ledger(book)] == [(r1.id, "a")]
    assert (await store.get_run(P, r2.id)).status == "pending"
    # B now knows (its watch delivered A's slot): it holds the run back and says why
    await wait_for(lambda: not isinstance(b.budgets.look(run2, now()), Plan), 10, what="b sees")
    assert b.budgets.look(run2, now()).reason == "budget one: 1/1 running"  # type: ignore[union-attr]
    (tmp_path / "ledger.gate-a").touch()
    await wait_for(lambda: idle(a), 10, what="a's run to finish")
    # the completion deleted the slot: free again for B
    assert (await etcd.range(keys.budget_slots("one"), count_only=True)).count == 0
    await wait_for(lambda: isinstance(b.budgets.look(run2, now()), Plan), 10, what="slot free")


async def test_two_workers_that_read_the_same_start_window_never_both_start(
    etcd, keys, rig, tmp_path
):
    """``starts: 1 per minute``: B read the window before A's claim counted its start; the claim
    compares the window key's mod revision, so B's claim fails."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(22), now)
    await budget(etcd, keys, {"name": "rate", "starts": {"per": "minute", "limit": 1}})
    await put_job(store, name="j", command=ledger_command(book), budgets=["rate"])
    a, b = await gated(rig, "a"), await gated(rig, "b")
    r1, r2 = await store.trigger(P, "j", {}), await store.trigger(P, "j", {})
    k1, kv1, run1 = await queued(etcd, keys, r1.id)
    k2, kv2, run2 = await queued(etcd, keys, r2.id)
    plan_a, plan_b = a.budgets.look(run1, now()), b.budgets.look(run2, now())
    assert isinstance(plan_a, Plan) and isinstance(plan_b, Plan)
    await a._claim(k1, kv1, run1, budget=plan_a)
    await b._claim(k2, kv2, run2, budget=plan_b)
    assert not b.running
    await wait_for(lambda: idle(a), 10, what="a's run to finish")
    assert [(r, n) for r, _, n in ledger(book)] == [(r1.id, "a")]
    assert (await store.get_run(P, r2.id)).status == "pending"
    kv = await etcd.get(keys.budget_starts("rate"))
    assert kv is not None and b'"count":1' in kv.value


async def test_a_start_decided_before_its_window_ended_is_recorded_in_that_window(
    etcd, keys, rig, tmp_path
):
    """``starts: 1 per hour``: the dispatch counted run 1's start in the hour that has just ended
    (its look's instant) and its claim went out in this one. The claim records that instant as
    the start, so the hour it counted holds the recorded start; recorded at the claim's own
    instant it fell in this hour, beside run 2's start counted here (CI, stop 35: 4 starts in a
    window of 2; D468)."""
    store = Store(etcd, keys, Snowflake(25), now)
    await budget(etcd, keys, {"name": "rate", "starts": {"per": "hour", "limit": 1}})
    await put_job(store, name="j", command="true", budgets=["rate"])
    a = await gated(rig, "a")
    r1, r2 = await store.trigger(P, "j", {}), await store.trigger(P, "j", {})
    k1, kv1, run1 = await queued(etcd, keys, r1.id)
    k2, kv2, run2 = await queued(etcd, keys, r2.id)
    hour = window_start(now(), 3600)
    decided = datetime.fromtimestamp(hour - 0.5, UTC)  # the look, before the hour began
    plan1 = a.budgets.look(run1, decided)
    assert isinstance(plan1, Plan) and plan1.windows["rate"] == Window(start=hour - 3600, count=1)
    await a._claim(k1, kv1, run1, budget=plan1)
    plan2 = a.budgets.look(run2, now())  # a new hour: no start counted in it yet
    assert isinstance(plan2, Plan)
    await a._claim(k2, kv2, run2, budget=plan2)
    counted = [plan1.windows["rate"].start, plan2.windows["rate"].start]
    runs = [await store.get_run(P, r.id) for r in (r1, r2)]
    recorded = [window_start(r.started_at, 3600) for r in runs if r.started_at is not None]
    assert recorded == counted, (recorded, counted)
    await wait_for(lambda: idle(a), 10, what="the runs to finish")


class Clock:
    """A worker's clock that stands still until the test moves it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


async def test_a_run_due_in_the_next_window_is_not_claimed_ahead_into_this_one(
    etcd, keys, rig, tmp_path
):
    """``starts: 1 per hour``, the worker's clock 0.3 s before an hour ends, a run due 0.2 s into
    the next: within the claim-ahead reach (0.75 s), but claimed ahead its start would be counted
    in the ending hour and recorded at its release in the next one, beside that hour's own
    start. It is claimed at its instant, counted in the hour it starts in, and a run after it in
    that hour waits (D468)."""
    store = Store(etcd, keys, Snowflake(26), now)
    await budget(etcd, keys, {"name": "rate", "starts": {"per": "hour", "limit": 1}})
    await put_job(store, name="j", command="true", budgets=["rate"])
    end = window_start(now(), 3600) + 2 * 3600  # an hour's end, in the worker's time
    clock = Clock(datetime.fromtimestamp(end - 0.3, UTC))
    a = await gated(rig, "a", clock)
    r1 = await store.trigger(P, "j", {})
    k1, kv1, run1 = await queued(etcd, keys, r1.id)
    due = datetime.fromtimestamp(end + 0.2, UTC)
    await etcd.put(k1, run1.model_copy(update={"not_before": due}).model_dump_json())
    k1, kv1, _ = await queued(etcd, keys, r1.id)
    a._on_queue(k1, kv1)  # as its queue watch delivers it
    a._dispatch()
    ahead = bool(a.claiming)
    await wait_for(lambda: not a.claiming, 10, what="a claim sent ahead to answer")
    clock.at = datetime.fromtimestamp(end + 0.25, UTC)
    a._dispatch()  # the run's instant has come

    async def started() -> bool:
        return (await store.get_run(P, r1.id)).status == "succeeded"

    await wait_for(started, 10, what="run 1 to run")
    run = await store.get_run(P, r1.id)
    assert run.started_at is not None
    kv = await etcd.get(keys.budget_starts("rate"))
    assert kv is not None
    assert Window.model_validate_json(kv.value) == Window(
        start=window_start(run.started_at, 3600), count=1
    ), (kv.value, run.started_at)
    assert not ahead
    r2 = await store.trigger(P, "j", {})
    _, _, run2 = await queued(etcd, keys, r2.id)
    clock.at += timedelta(seconds=0.1)
    wait = a.budgets.look(run2, clock())
    assert isinstance(wait, Wait) and "1/1 starts per hour" in wait.reason, wait


async def test_a_budget_slot_vanishes_with_the_workers_lease(etcd, keys, rig, tmp_path):
    """The slot is written with the claimer's lease: when it expires (here: revoked, as etcd
    does at expiry) the slot is free for the other nodes."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(23), now)
    await budget(etcd, keys, {"name": "one", "concurrent": 1})
    await put_job(store, name="j", command=ledger_command(book, gate=True), budgets=["one"])
    a = await gated(rig, "a")
    run = await store.trigger(P, "j", {})
    key, kv, parsed = await queued(etcd, keys)
    plan = a.budgets.look(parsed, now())
    assert isinstance(plan, Plan)
    await a._claim(key, kv, parsed, budget=plan)
    slots = (await etcd.range(keys.budget_slots("one"))).kvs
    assert [(s.value.decode(), s.lease) for s in slots] == [(run.id, a.session.lease_id)]
    await a.close()
    await etcd.revoke(a.session.lease_id)
    assert (await etcd.range(keys.budget_slots("one"), count_only=True)).count == 0


async def test_a_claim_given_up_by_the_orphan_check_gives_its_budget_slot_back(
    etcd, keys, rig, tmp_path
):
    """A claim of ours whose attempt already ran here (its end could not be recorded) is given
    up by the orphan check (D2), so the leader records it lost; its budget slot goes with it,
    instead of staying held until the node's lease ends."""
    store = Store(etcd, keys, Snowflake(24), now)
    await budget(etcd, keys, {"name": "one", "concurrent": 1})
    await put_job(store, name="j", command="true", budgets=["one"])
    a = await gated(rig, "a")
    run = await store.trigger(P, "j", {})
    lease = a.session.lease_id
    claim, slot = keys.claim(run.id), keys.budget_slot("one", 0)
    await etcd.txn([], [Op.put(claim, dumps({"project": P, "attempt": 1}), lease)])
    await etcd.txn([], [Op.put(slot, run.id, lease)])
    await wait_for(lambda: a.budgets.held_by(run.id) == [slot], 10, what="a sees the slot")
    a._executed[run.id] = 1  # this attempt ran here already
    rig.loops.append(asyncio.create_task(a._adopt_orphans()))
    a._orphan_check.set()

    async def given_up() -> bool:
        return await etcd.get(claim) is None

    await wait_for(given_up, 10, what="the claim given up")
    assert await etcd.get(slot) is None
    assert not a.running
