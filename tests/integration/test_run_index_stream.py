"""The leader's streams of the run index (D421), on a real etcd with the components' own loops.

- The dependency waiter's watches of run index keys, ticks and jobs leave deletions out: its
  handler wakes upstream waiters on puts only, so retention's deletions of run index keys and
  ticks (one of each per pruned run) are not sent to the leader at all. The puts still arrive (a
  sentinel put after the deletions is seen) and the client counted no deletion.
- The workflow engine reads the run index from the waiter's stream instead of a watch of its
  own: each put reaches the node once (counted by the client), and both see it; a put made
  after the engine started reading, and one made while it read, are both folded in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cluster.etcd import Etcd, Event, watch_family
from cluster.keys import Keys
from cluster.workflows import task_job_name
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
        await asyncio.gather(task, return_exceptions=True)
    assert woken.count((P, "job", "up")) == 3  # two index puts and the tick: every put woke
    # etcd sent the puts only (the client counts what it received)
    assert etcd.watch_events[watch_family(runs)] == 3
    assert etcd.watch_events[watch_family(ticks)] == 1


async def test_the_workflow_engine_reads_the_run_index_from_the_waiters_stream(rig: Rig) -> None:
    leader = await rig.leader("n1")
    deps, engine = leader.sched.slots.deps, leader.sched.workflows
    etcd, runs = rig.etcd, rig.keys.job_runs()
    task_job = task_job_name("wf", "t")
    rev = (await etcd.status())["revision"]
    waiter = asyncio.create_task(deps.run(rev))
    read = engine._load

    loaded = asyncio.Event()

    async def load_then_put() -> int:  # a run ends while the engine reads: not missed either
        got = await read()
        await etcd.put(f"{runs}{P}/{task_job}/during", "succeeded")
        loaded.set()
        return got

    engine._load = load_then_put  # type: ignore[method-assign]
    handled = engine._on_run_event
    seen: list[tuple[str, str]] = []  # what reached the engine's handler

    def on_run_event(ev: Event) -> None:
        seen.append((ev.kv.key.rsplit("/", 1)[-1], ev.kv.value.decode()))
        handled(ev)

    engine._on_run_event = on_run_event  # type: ignore[method-assign]
    running = asyncio.create_task(engine.run())
    try:
        await wait_for(loaded.is_set, 10, what="the engine's read")
        await etcd.put(f"{runs}{P}/{task_job}/r1", "pending")
        await etcd.put(f"{runs}{P}/{task_job}/r1", "succeeded")
        await etcd.put(f"{runs}{P}/plain/r2", "succeeded")
        await wait_for(lambda: ("r2", "succeeded") in seen, 10, what="the runs' ends")
        woken: list[str] = []
        deps._kick_upstream = lambda project, kind, name: woken.append(name)  # type: ignore[method-assign]
        await etcd.put(f"{runs}{P}/up/r3", "succeeded")
        await wait_for(lambda: "up" in woken, 10, what="the waiter still sees run index puts")
    finally:
        for task in (running, waiter):
            task.cancel()
        await asyncio.gather(running, waiter, return_exceptions=True)
    assert seen == [  # in order, from the stream the waiter reads
        ("during", "succeeded"),
        ("r1", "pending"),
        ("r1", "succeeded"),
        ("r2", "succeeded"),
        ("r3", "succeeded"),
    ]
    # one stream: each of the five puts was received once (two watches: the first four twice)
    assert etcd.watch_events[watch_family(runs)] == 5
    assert not deps._run_readers  # the engine left the stream when it stopped
