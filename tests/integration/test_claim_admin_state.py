"""A worker's claim compares its node's admin state as the decision to claim saw it (D470).

The dispatch decides to claim a queued run and spawns the claim; on a loaded node the view's
watch may deliver an operator's drain before the claim's turn comes. The claim must compare the
state the decision read, so that a drain written before the claim is sent refuses it ("drain
is exact", docs/placement.md) — comparing the view as it stands when the claim goes out let a
node drained meanwhile claim and start the run (found beside D469's budget guard, which had the
same shape)."""

from __future__ import annotations

from cluster.groups import NodeState
from tests.conftest import wait_for
from tests.integration.test_claims import queued
from tests.ownclaim_rig import P, job, now, rig

__all__ = ["rig"]


async def test_a_drain_heard_between_the_decision_and_the_claim_refuses_the_claim(etcd, keys, rig):
    n = await rig.node("n1")
    w, view = n.worker, n.worker.view
    assert view is not None
    await job(n.store, "j", cron="0 0 1 1 *")  # never due: the only run is the one triggered
    state, placement = view.own_state(), view.placement(None, "", P, None)
    # the decision's view: active, this node a candidate (frozen while the drain is written)
    view.own_state = lambda: state  # type: ignore[method-assign]
    view.placement = lambda *a, **k: placement  # type: ignore[method-assign]
    drained = NodeState(admin="draining", changed_at=now(), reason="test")
    await etcd.put(keys.node_state("n1"), drained.model_dump_json())
    written = await etcd.get(keys.node_state("n1"))
    assert written is not None
    run = await n.store.trigger(P, "j", {})
    key, kv, _ = await queued(etcd, keys, run.id)
    w._on_queue(key, kv)  # as the queue watch delivers it
    w._dispatch()  # decided (the node is active as far as it knows) and the claim spawned
    assert key in w.claiming
    # the view hears of the drain before the claim's turn (a loaded loop runs both in one go)
    view.own_state = lambda: (drained, written.mod_revision)  # type: ignore[method-assign]
    await wait_for(lambda: not w.claiming, 10, what="the claim's answer")
    assert not w.running
    assert await etcd.get(keys.claim(run.id)) is None
    assert (await n.store.get_run(P, run.id)).status == "pending"
