"""The leader's own claims (D444) raced on purpose, in-process against a real etcd: a leader
(``Scheduler``) and its node's worker sharing one lease, each race set up directly — a drain the
worker's view has not heard of, the lease revoked between the plan and the write, a creation whose
reply is lost, a cancel before the instant, a burst beyond ``max_armed``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from cluster.errors import LostOwnership
from cluster.etcd import OutcomeUnknown
from cluster.groups import NodeState
from cluster.models import FINISHED, Run
from tests.conftest import wait_for
from tests.ownclaim_rig import (
    AHEAD,
    P,
    a_tick_four_seconds_away,
    early_in_a_second,
    job,
    now,
    queued_ids,
    reserved_nothing,
    rig,
    runs_of,
)

__all__ = ["rig"]  # the fixture


# -- the claim's compares --------------------------------------------------------------------


async def test_a_creation_claims_the_run_bound_to_the_lease_without_a_queue_entry(
    etcd, keys, rig, tmp_path
):
    n = await rig.node("n1")
    await a_tick_four_seconds_away()  # room before the instant, on a loaded machine too
    await job(n.store, "j", f"echo $CRONMESH_RUN_ID >> {tmp_path / 'ran'}", cron="*/5 * * * * *")
    sched = await n.lead("n1", ahead=AHEAD)
    await sched.fire((P, "j"))
    runs = await runs_of(etcd, keys, "j")
    assert runs and all(r.status == "running" and r.node == "n1" for r in runs)
    ahead = [r for r in runs if r.not_before is not None]
    assert ahead and all(r.not_before > now() for r in ahead)
    assert await queued_ids(etcd, keys) == set()
    for r in runs:
        claim = await etcd.get(keys.claim(r.id))
        assert claim is not None and claim.lease == n.session.lease_id
        assert n.worker.running[r.id].claim_revision == claim.create_revision
    # more than the claim-ahead before their instant: held, no process yet (D456)
    assert n.worker.held() == len(ahead) and n.worker.armed() == 0
    assert all(n.worker.running[r.id].proc is None for r in ahead)
    assert reserved_nothing(n.worker)()
    ids = {r.id for r in runs}

    async def done() -> bool:
        got = await runs_of(etcd, keys, "j")
        return all(r.status == "succeeded" for r in got if r.id in ids)

    await wait_for(done, 15, what="the runs finished")
    assert sorted((tmp_path / "ran").read_text().split()) == sorted(ids)  # each ran once


async def test_a_drained_node_whose_view_has_not_heard_queues_the_tick_instead(etcd, keys, rig):
    """The operator drains the node; its worker's view has not delivered it yet (frozen here):
    the creation's compare on the node's admin state refuses the claim, and the tick is written
    again through the queue — fired once, not lost, not claimed here."""
    n = await rig.node("n1")
    await job(n.store, "j")
    sched = await n.lead("n1")
    view = n.worker.view
    assert view is not None
    state, placement = view.own_state(), view.placement(None, "", P, None)
    view.own_state = lambda: state  # type: ignore[method-assign]
    view.placement = lambda *a, **k: placement  # type: ignore[method-assign]
    drained = NodeState(admin="draining", changed_at=now(), reason="test")
    await etcd.put(keys.node_state("n1"), drained.model_dump_json())
    await early_in_a_second()
    await sched.fire((P, "j"))
    runs = await runs_of(etcd, keys, "j")
    assert runs and all(r.status == "pending" and r.node is None for r in runs)
    assert await queued_ids(etcd, keys) == {r.id for r in runs}
    for r in runs:
        assert await etcd.get(keys.claim(r.id)) is None
    assert not n.worker.running and reserved_nothing(n.worker)()
    await sched.fire((P, "j"))  # planned again: the same ticks are handled, none twice
    assert [r.id for r in await runs_of(etcd, keys, "j")][: len(runs)] == [r.id for r in runs]
    ticks = [r.scheduled_at for r in await runs_of(etcd, keys, "j")]
    assert len(ticks) == len(set(ticks))


async def test_the_lease_lost_between_the_plan_and_the_write_loses_no_tick(etcd, keys, rig):
    """The node's lease is revoked after the leader reserved its runs and before its write: the
    creation is fenced (the election key went with the lease; etcd checks the claim's lease only
    on the branch it takes), the reservations go back, nothing runs here; the next leader fires
    the same ticks, once each."""
    n = await rig.node("n1")
    await job(n.store, "j")
    sched = await n.lead("n1")
    txn = n.etcd.txn
    revoked = []

    async def revoke_first(*args: Any, **kw: Any) -> Any:
        if not revoked:
            revoked.append(bool(n.worker.claiming))  # the runs were reserved by then
            await etcd.revoke(n.session.lease_id)
        return await txn(*args, **kw)

    n.etcd.txn = revoke_first  # type: ignore[method-assign]
    await early_in_a_second()
    first_tick = datetime.fromtimestamp(int(time.time()) + 1, UTC)  # planned ahead, not written
    with pytest.raises(LostOwnership):
        await sched.fire((P, "j"))
    assert revoked == [True]
    assert not n.worker.running and reserved_nothing(n.worker)()
    assert await runs_of(etcd, keys, "j") == []

    m = await rig.node("n2")
    second = await m.lead("n2")
    await second.fire((P, "j"))
    runs = await runs_of(etcd, keys, "j")
    assert runs and all(r.node == "n2" and r.status == "running" for r in runs)
    ticks = [r.scheduled_at for r in runs]
    assert len(ticks) == len(set(ticks)) and first_tick in ticks


async def test_a_creation_whose_reply_is_lost_is_adopted_and_runs_once(etcd, keys, rig, tmp_path):
    """The creation applies but its reply is lost: the reservations go back, the leader re-reads
    the job's state (the tick is handled: not written twice), and the worker's orphan check
    adopts the claim bound to its lease: each run starts once."""
    book = tmp_path / "ran"
    n = await rig.node("n1", orphans=True)
    await job(n.store, "j", f"echo $CRONMESH_RUN_ID >> {book}")
    sched = await n.lead("n1")
    txn = n.etcd.txn
    lost = []

    async def lose_the_reply(*args: Any, **kw: Any) -> Any:
        res = await txn(*args, **kw)
        if not lost:
            lost.append(res.succeeded)
            raise OutcomeUnknown("test: the reply was lost")
        return res

    n.etcd.txn = lose_the_reply  # type: ignore[method-assign]
    await early_in_a_second()
    await sched._fire_guarded((P, "j"))  # the scheduler's own handling of a failed write
    assert lost == [True]
    runs = await runs_of(etcd, keys, "j")
    assert runs and all(r.status == "running" and r.node == "n1" for r in runs)
    assert reserved_nothing(n.worker)()
    ids = {r.id for r in runs}
    await sched.fire((P, "j"))  # planned again later: those ticks are handled already
    again = await runs_of(etcd, keys, "j")
    ticks = [r.scheduled_at for r in again]
    assert len(ticks) == len(set(ticks))

    async def done() -> bool:
        got = {r.id: r for r in await runs_of(etcd, keys, "j")}
        return all(got[i].status in FINISHED for i in ids)

    # nothing else can start them here (no dispatch loop): the orphan check adopted them
    await wait_for(done, 15, what="the adopted runs finished")
    started = book.read_text().split()
    assert sorted(i for i in started if i in ids) == sorted(ids)  # once each


async def test_a_run_claimed_in_its_creation_and_cancelled_before_its_instant_never_starts(
    etcd, keys, rig, tmp_path
):
    book = tmp_path / "ran"
    n = await rig.node("n1")
    await a_tick_four_seconds_away()
    await job(n.store, "j", f"echo $CRONMESH_RUN_ID >> {book}", cron="*/5 * * * * *")
    sched = await n.lead("n1", ahead=AHEAD)
    await sched.fire((P, "j"))  # its first tick: about 4 s ahead
    runs = await runs_of(etcd, keys, "j")
    assert len(runs) == 1 and runs[0].status == "running", runs
    assert runs[0].not_before is not None and runs[0].not_before > now()
    await n.store.cancel_run(P, runs[0].id)

    async def ended() -> Run | None:
        r = (await runs_of(etcd, keys, "j"))[0]
        return r if r.status in FINISHED else None

    final = await wait_for(ended, 10, what="the cancel")
    assert final.status == "cancelled", final
    assert not book.exists()
    assert await etcd.get(keys.claim(final.id)) is None


@pytest.mark.parametrize("arming", ["armed", "held"])
async def test_creations_hold_no_more_ahead_than_max_armed_and_queue_the_rest(
    etcd, keys, rig, arming
):
    """Five jobs due at one instant on a node allowed 2 armed runs: their shared creation claims
    2 (the worker's count includes the reservations made in the same pass), the other 3 are
    queued — armed at once when the instant is within the claim-ahead (widened here), else held
    (D456): each count bounded by ``max_armed``."""
    n = await rig.node("n1", max_armed=2)
    if arming == "armed":
        n.worker.claim_ahead = AHEAD  # the tick ~4 s away is within it: armed in its creation
    names = [f"j{i}" for i in range(5)]
    await a_tick_four_seconds_away()
    for name in names:
        await job(n.store, name, cron="*/5 * * * * *")
    sched = await n.lead("n1", ahead=AHEAD)
    await sched._fire_batch([(P, name) for name in names])
    runs = [r for name in names for r in await runs_of(etcd, keys, name)]
    assert len(runs) == 5 and all(r.not_before is not None for r in runs), runs
    mine = [r for r in runs if r.status == "running"]
    assert len(mine) == 2 and all(r.node == "n1" for r in mine)
    assert await queued_ids(etcd, keys) == {r.id for r in runs if r.status == "pending"}
    counts = {"armed": n.worker.armed(), "held": n.worker.held()}
    assert counts == {arming: 2, "armed" if arming == "held" else "held": 0}
    assert reserved_nothing(n.worker)()


async def test_held_claims_get_their_process_at_their_arming_and_run_once(
    etcd, keys, rig, tmp_path
):
    """D456: a node allowed 2 armed runs holds 2 own claims of a tick ~4 s away (the other 3
    jobs' runs are queued) with no process until the claim-ahead before their instant; then each
    is armed (2 armed, none held), starts at its instant and runs once."""
    book = tmp_path / "ran"
    n = await rig.node("n1", max_armed=2)
    w = n.worker
    names = [f"j{i}" for i in range(5)]
    await a_tick_four_seconds_away()
    for name in names:
        await job(n.store, name, f"echo $CRONMESH_RUN_ID >> {book}", cron="*/5 * * * * *")
    sched = await n.lead("n1", ahead=AHEAD)
    await sched._fire_batch([(P, name) for name in names])
    mine = [r for name in names for r in await runs_of(etcd, keys, name) if r.status == "running"]
    assert len(mine) == 2 and w.held() == 2 and w.armed() == 0
    instant = mine[0].not_before
    assert instant is not None and all(r.not_before == instant for r in mine)
    assert all(w.running[r.id].proc is None for r in mine)  # nothing spawned, no secrets read
    assert (instant - now()).total_seconds() > w.claim_ahead  # (the checks above were early)

    def armed() -> bool:
        return w.armed() == 2 and all(w.running[r.id].proc is not None for r in mine)

    await wait_for(armed, 10, interval=0.01, what="the held claims armed")
    assert now() < instant and w.held() == 0  # armed ahead of the instant, within max_armed
    ids = {r.id for r in mine}

    async def done() -> bool:
        got = {r.id: r for name in names for r in await runs_of(etcd, keys, name)}
        return all(got[i].status == "succeeded" for i in ids)

    await wait_for(done, 15, what="the runs finished")
    started = [i for i in book.read_text().split() if i in ids]
    assert sorted(started) == sorted(ids)  # once each
    final = [r for name in names for r in await runs_of(etcd, keys, name) if r.id in ids]
    assert all(r.started_at is not None and r.started_at >= instant for r in final)
