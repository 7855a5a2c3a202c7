"""The leader's own claims (D444) when a creation does not answer plainly, in-process against a
real etcd: its reply lost (one job, a shared batch of two), a shared batch rejected, a batch
cancelled before it was sent. The worker's periodic orphan check is out of reach here
(``ORPHANS_EVERY``): a claim whose reply was lost is adopted only because the lost reply woke
the check, and before the run's instant, several seconds away."""

from __future__ import annotations

import asyncio
from typing import Any

from cluster.etcd import Compare, OutcomeUnknown
from cluster.models import Run
from nodes import metrics
from tests.conftest import wait_for
from tests.ownclaim_rig import (
    AHEAD,
    P,
    a_tick_four_seconds_away,
    job,
    now,
    queued_ids,
    reserved_nothing,
    rig,
    runs_of,
)

__all__ = ["rig"]  # the fixture

NAMES = ["a", "b"]


async def jobs(store: Any, names: list[str]) -> None:
    for name in names:
        await job(store, name, cron="*/5 * * * * *")


async def all_runs(etcd: Any, keys: Any) -> list[Run]:
    return [r for name in NAMES for r in await runs_of(etcd, keys, name)]


def counted(label: str) -> float:
    return float(metrics.OUTCOME_UNKNOWN.labels(label)._value.get())


async def adopted_before_their_instant(w: Any, runs: list[Run]) -> None:
    ids = {r.id for r in runs}
    assert runs and all(r.status == "running" and r.not_before is not None for r in runs)
    await wait_for(lambda: ids <= set(w.running), 3, what="the claims adopted")
    assert now() < min(r.not_before for r in runs if r.not_before is not None)


async def test_a_lost_reply_wakes_the_orphan_check_which_adopts_before_the_instant(etcd, keys, rig):
    n = await rig.node("n1", orphans=True)
    await a_tick_four_seconds_away()  # the jobs made then: their first tick ~4 s off
    await jobs(n.store, ["a"])
    sched = await n.lead("n1", ahead=AHEAD)
    txn, lost = n.etcd.txn, []

    async def lose_the_reply(*args: Any, **kw: Any) -> Any:
        res = await txn(*args, **kw)
        if not lost:
            lost.append(res.succeeded)
            raise OutcomeUnknown("test: the reply was lost")
        return res

    n.etcd.txn = lose_the_reply  # type: ignore[method-assign]
    await sched._fire_guarded((P, "a"))
    assert lost == [True]
    assert reserved_nothing(n.worker)()
    await adopted_before_their_instant(n.worker, await runs_of(etcd, keys, "a"))


async def test_a_shared_batch_whose_reply_is_lost_ends_its_reservations_and_is_adopted(
    etcd, keys, rig
):
    """Two jobs' runs claimed in one shared creation whose reply is lost: the reservations end
    as the write fails (before the leader re-reads the jobs' states), the orphan check is woken
    and adopts both runs before their instant; the lost reply is counted once."""
    n = await rig.node("n1", orphans=True)
    w = n.worker
    await a_tick_four_seconds_away()  # the jobs made then: their first tick ~4 s off
    await jobs(n.store, NAMES)
    sched = await n.lead("n1", ahead=AHEAD)
    txn, lost, at_reread = n.etcd.txn, [], []

    async def lose_the_reply(compares: Any, ops: Any, *rest: Any, **kw: Any) -> Any:
        res = await txn(compares, ops, *rest, **kw)
        if not lost:
            lost.append((res.succeeded, len(w.claiming)))
            raise OutcomeUnknown("test: the reply was lost")
        return res

    refresh = sched.cache.refresh_state

    async def reread(jk: Any) -> None:
        at_reread.append(reserved_nothing(w)())
        await refresh(jk)

    n.etcd.txn = lose_the_reply  # type: ignore[method-assign]
    sched.cache.refresh_state = reread  # type: ignore[method-assign]
    ticks, claims = counted("tick"), counted("claim")
    await sched._fire_batch([(P, name) for name in NAMES])
    assert lost == [(True, 2)]  # one transaction, both runs reserved
    assert at_reread == [True, True]
    assert counted("tick") == ticks + 1 and counted("claim") == claims  # once (D449)
    runs = await all_runs(etcd, keys)
    assert len(runs) == 2 and all(r.node == "n1" for r in runs), runs
    await adopted_before_their_instant(w, runs)


async def test_a_shared_batch_rejected_is_queued_once_its_reservations_ended(etcd, keys, rig):
    """A shared creation of two jobs' own claims is rejected: the reservations end with the
    answer, and each job's run is written again through the queue, once."""
    n = await rig.node("n1")
    w = n.worker
    await a_tick_four_seconds_away()  # the jobs made then: their first tick ~4 s off
    await jobs(n.store, NAMES)
    sched = await n.lead("n1", ahead=AHEAD)
    txn, calls = n.etcd.txn, []

    async def reject_first(compares: Any, ops: Any, *rest: Any, **kw: Any) -> Any:
        calls.append(reserved_nothing(w)())
        if len(calls) == 1:
            assert len(w.claiming) == 2  # the shared batch, both runs reserved
            compares = [*compares, Compare.absent(keys.job(P, "a"))]  # refused
        return await txn(compares, ops, *rest, **kw)

    n.etcd.txn = reject_first  # type: ignore[method-assign]
    await sched._fire_batch([(P, name) for name in NAMES])
    assert calls == [False, True, True]  # the batch; then each job alone, nothing reserved
    runs = await all_runs(etcd, keys)
    assert sorted(r.job for r in runs) == NAMES, runs  # once each
    assert all(r.status == "pending" and r.node is None for r in runs), runs
    assert await queued_ids(etcd, keys) == {r.id for r in runs}
    for r in runs:
        assert await etcd.get(keys.claim(r.id)) is None
    assert not w.running and reserved_nothing(w)()


async def test_a_batch_cancelled_before_it_was_sent_releases_without_an_orphan_wake(
    etcd, keys, rig
):
    n = await rig.node("n1")
    w = n.worker
    await a_tick_four_seconds_away()  # the jobs made then: their first tick ~4 s off
    await jobs(n.store, NAMES)
    sched = await n.lead("n1", ahead=AHEAD)
    taken = 0
    while not sched._sem.locked():  # every write place taken: the batch waits to be sent
        await sched._sem.acquire()
        taken += 1
    claims = counted("claim")
    try:
        firing = asyncio.create_task(sched._fire_batch([(P, name) for name in NAMES]))
        await wait_for(lambda: len(w.claiming) == 2, 5, what="both runs reserved")
        firing.cancel()
        await asyncio.gather(firing, return_exceptions=True)
    finally:
        for _ in range(taken):
            sched._sem.release()
    assert reserved_nothing(w)() and not w._orphan_check.is_set()
    assert counted("claim") == claims
    assert await all_runs(etcd, keys) == []
