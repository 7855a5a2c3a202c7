"""The dependency waiter's watches of run index keys, ticks and jobs leave deletions out (D421):
its handler wakes upstream waiters on puts only, so retention's deletions of run index keys and
ticks (one of each per pruned run) are not sent to the leader at all. On a real etcd, with the
waiter's own loop running: the puts still arrive (a sentinel put after the deletions is seen),
and the client counted no deletion for those families."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from cluster.etcd import Etcd, watch_family
from cluster.keys import Keys
from tests.conftest import wait_for
from tests.integration.test_fencing import P, Rig


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def test_retentions_deletions_never_reach_the_waiter(rig: Rig) -> None:
    leader = await rig.leader("n1")
    deps = leader.sched.slots.deps
    woken: list[tuple[str, str, str]] = []
    deps._kick_upstream = lambda project, kind, name: woken.append((project, kind, name))  # type: ignore[method-assign]
    etcd, keys = rig.etcd, rig.keys
    runs, ticks = keys.job_runs(), keys.prefix + "/ticks/"
    rev = (await etcd.status())["revision"]
    task = asyncio.create_task(deps.run(rev))
    try:
        await etcd.put(f"{runs}{P}/up/r1", "pending")
        await etcd.put(f"{runs}{P}/up/r1", "succeeded")
        await etcd.put(f"{ticks}{P}/up/t1", "{}")
        # what retention does to a pruned run: its index key and its tick go
        await etcd.delete(f"{runs}{P}/up/r1")
        await etcd.delete(f"{ticks}{P}/up/", prefix=True)
        await etcd.put(f"{runs}{P}/last/r2", "succeeded")  # after the deletions, same stream
        await wait_for(lambda: (P, "job", "last") in woken, 10, what="the sentinel put")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert woken.count((P, "job", "up")) == 3  # two index puts and the tick: every put woke
    # etcd sent the puts only (the client counts what it received)
    assert etcd.watch_events[watch_family(runs)] == 3
    assert etcd.watch_events[watch_family(ticks)] == 1
