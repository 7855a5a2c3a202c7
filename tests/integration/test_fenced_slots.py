"""A completion fenced because its claim was taken gives its slots back (D319, D275's leak).

The claim goes while the node's lease lives on (D178): the completion writes nothing of the run,
and its budget and job slots used to stay held until that node's lease ended. Its failure branch
now deletes each slot it took, compared on the slot's create revision (the claim's), so a slot
someone else took since is left alone. On a real etcd, with workers in this process.
"""

from __future__ import annotations

from cluster.etcd import Op
from cluster.ids import Snowflake
from cluster.store import Store
from nodes.worker.budgets import Plan
from tests.conftest import wait_for
from tests.integration import test_budget_claims, test_claims
from tests.integration.test_budget_claims import budget, gated
from tests.integration.test_claims import P, idle, ledger, ledger_command, now, put_job, queued

rig = test_claims.rig
_ = test_budget_claims


async def test_a_fenced_completion_frees_its_budget_and_job_slots(etcd, keys, rig, tmp_path):
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(31), now)
    await budget(etcd, keys, {"name": "one", "concurrent": 1})
    command = ledger_command(book, gate=True)
    await put_job(store, name="j", command=command, budgets=["one"], max_parallel=1)
    a = await gated(rig, "a")
    run = await store.trigger(P, "j", {})
    key, kv, parsed = await queued(etcd, keys)
    plan = a.budgets.look(parsed, now())
    assert isinstance(plan, Plan)
    await a._claim(key, kv, parsed, budget=plan)
    await wait_for(lambda: len(ledger(book)) == 1, 10, what="the process")
    held = [keys.budget_slot("one", 0), *[s for s in a.running[run.id].slots if "budget" not in s]]
    assert len(held) == 2, a.running[run.id].slots  # the budget's slot and the job's
    for slot in held:
        got = await etcd.get(slot)
        assert got is not None and got.lease == a.session.lease_id

    await etcd.delete(keys.claim(run.id))  # taken away; a's lease lives on
    (tmp_path / "ledger.gate-a").touch()
    await wait_for(lambda: idle(a), 10, what="a's fenced completion")
    for slot in held:
        assert await etcd.get(slot) is None, slot  # free now, not when a's lease ends
    assert (await store.get_run(P, run.id)).status == "running"  # the run itself untouched


async def test_a_fenced_completion_leaves_a_slot_someone_took_since(etcd, keys, rig, tmp_path):
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(32), now)
    await budget(etcd, keys, {"name": "one", "concurrent": 1})
    await put_job(store, name="j", command=ledger_command(book, gate=True), budgets=["one"])
    a = await gated(rig, "a")
    run = await store.trigger(P, "j", {})
    key, kv, parsed = await queued(etcd, keys)
    plan = a.budgets.look(parsed, now())
    assert isinstance(plan, Plan)
    await a._claim(key, kv, parsed, budget=plan)
    await wait_for(lambda: len(ledger(book)) == 1, 10, what="the process")
    slot = keys.budget_slot("one", 0)
    # the claim goes, and the slot too (as with a lease that ended); another run takes it
    await etcd.txn([], [Op.delete(keys.claim(run.id)), Op.delete(slot)])
    await etcd.put(slot, "another-run")
    theirs = await etcd.get(slot)
    assert theirs is not None
    (tmp_path / "ledger.gate-a").touch()
    await wait_for(lambda: idle(a), 10, what="a's fenced completion")
    kept = await etcd.get(slot)
    assert kept is not None and kept.value == b"another-run"
    assert kept.create_revision == theirs.create_revision
