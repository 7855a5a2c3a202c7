"""Watches that leave out the events their handler ignores (D349), and the count of the watch
events a client received by key family (D348), on a real etcd.

A watcher that skips deletions must still see every put, in order, and its stream must not carry
the deletions at all (the client counts what etcd sent). A node exposes its counts in /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from cluster.etcd import Etcd, Event, watch_family
from cluster.watch import follow, follow_puts
from tests.conftest import wait_for


async def _watching(etcd: Etcd, prefix: str, **kw: Any) -> tuple[list[Event], asyncio.Task[None]]:
    seen: list[Event] = []
    rev = (await etcd.status())["revision"]
    task = asyncio.create_task(follow(etcd, prefix, rev, seen.append, **kw))
    return seen, task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_skipping_deletions_keeps_every_put_and_receives_no_deletion(
    etcd: Etcd, prefix: str
) -> None:
    base = f"{prefix}/job-runs/"
    seen, task = await _watching(etcd, base, skip="delete")
    try:
        await etcd.put(base + "a", "pending")
        await etcd.put(base + "b", "pending")
        await etcd.delete(base + "a")
        await etcd.put(base + "b", "succeeded")
        await etcd.delete(base + "b")
        await etcd.put(base + "z", "sentinel")  # after every deletion, on the same stream
        await wait_for(lambda: any(ev.kv.key.endswith("z") for ev in seen), 10, what="sentinel")
    finally:
        await _stop(task)
    got = [(ev.kind, ev.kv.key[len(base) :], ev.kv.value.decode()) for ev in seen]
    assert got == [
        ("put", "a", "pending"),
        ("put", "b", "pending"),
        ("put", "b", "succeeded"),
        ("put", "z", "sentinel"),
    ]
    # etcd sent the four puts only: the client counted what it received, not what it dropped
    assert etcd.watch_events[watch_family(base)] == 4


async def test_skipping_puts_receives_only_deletions(etcd: Etcd, prefix: str) -> None:
    base = f"{prefix}/claims/"
    seen, task = await _watching(etcd, base, skip="put")
    try:
        await etcd.put(base + "r1", "{}")
        await etcd.put(base + "r2", "{}")
        await etcd.delete(base + "r1")
        await etcd.delete(base + "r2")
        await wait_for(lambda: len(seen) >= 2, 10, what="two deletions")
    finally:
        await _stop(task)
    assert [(ev.kind, ev.kv.key[len(base) :]) for ev in seen] == [
        ("delete", "r1"),
        ("delete", "r2"),
    ]
    assert etcd.watch_events[watch_family(base)] == 2


async def test_follow_puts_still_hands_over_a_reread_prefix(etcd: Etcd, prefix: str) -> None:
    """Without a revision it reads the prefix first (every present key, as a put), then skips
    deletions from there on."""
    base = f"{prefix}/job-runs/"
    await etcd.put(base + "old", "succeeded")
    seen: list[Event] = []
    task = asyncio.create_task(follow_puts(etcd, base, None, seen.append))
    try:
        await wait_for(lambda: len(seen) >= 1, 10, what="the read")
        await etcd.delete(base + "old")
        await etcd.put(base + "new", "pending")
        await wait_for(lambda: len(seen) >= 2, 10, what="the new put")
    finally:
        await _stop(task)
    assert [(ev.kind, ev.kv.key[len(base) :]) for ev in seen] == [("put", "old"), ("put", "new")]


def test_watch_family_is_the_first_segment_below_the_prefix() -> None:
    assert watch_family("/cronmesh/queue/") == "/cronmesh/queue"
    assert watch_family("/cronmesh/job-runs/p/j/") == "/cronmesh/job-runs"
    assert watch_family("/cronmesh/settings/freeze") == "/cronmesh/settings"
    assert watch_family("/cronmesh") == "/cronmesh"
