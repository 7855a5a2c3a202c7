"""`nodes.leader.loops.DueQueue`: the one due-time queue of the leader's loops (issue #20)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from nodes.leader.loops import DueQueue

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_keys_pop_in_due_order_and_a_new_time_replaces_the_old() -> None:
    now = [T0]
    q: DueQueue[str] = DueQueue(lambda: now[0])
    q.set("b", T0 + timedelta(seconds=2))
    q.set("a", T0 + timedelta(seconds=1))
    q.set("c", T0 + timedelta(seconds=1))
    q.set("c", T0 + timedelta(seconds=5))  # replaces c's earlier time
    q.set("gone", T0)
    q.set("gone", None)  # not due at all any more
    assert q.pop_due() == []
    now[0] = T0 + timedelta(seconds=2)
    assert q.pop_due() == ["a", "b"]
    assert q.pop_due() == []
    now[0] = T0 + timedelta(seconds=5)
    assert q.pop_due() == ["c"]


def test_a_limited_pop_takes_the_earliest_and_leaves_the_rest_at_their_instants() -> None:
    now = [T0]
    q: DueQueue[int] = DueQueue(lambda: now[0])
    for i in range(10):
        q.set(i, T0 - timedelta(seconds=10 - i))  # 0 is the earliest
    q.set(3, T0 - timedelta(seconds=20))  # moved earlier: its old entry is stale
    assert q.pop_due(4) == [3, 0, 1, 2]  # stale entries do not count against the limit
    q.set(0, T0 - timedelta(seconds=30))  # re-armed earlier than every one left
    assert q.pop_due(2) == [0, 4]
    assert q.pop_due() == [5, 6, 7, 8, 9]


async def test_wait_returns_when_a_key_is_set_or_due() -> None:
    q: DueQueue[str] = DueQueue(lambda: datetime.now(UTC))
    waiter = asyncio.create_task(q.wait())
    await asyncio.sleep(0)
    assert not waiter.done()  # nothing queued: it would sleep an hour
    q.set("x", datetime.now(UTC) + timedelta(hours=1))
    await asyncio.wait_for(waiter, 5)
    q.set("y", datetime.now(UTC) + timedelta(milliseconds=50), wake=False)
    await asyncio.wait_for(q.wait(), 5)  # sleeps until y is due
    assert q.pop_due() == ["y"]


def test_a_key_re_set_again_and_again_leaves_no_stale_entries_behind() -> None:
    """A waiter looked at on every upstream event is set due now, then re-armed a day away,
    each time: before, each re-arm stayed in the heap until its instant (a day later), so a
    busy upstream grew the leader's memory by one entry per look, for days (review of D294)."""
    now = [T0]
    q: DueQueue[str] = DueQueue(lambda: now[0])
    for i in range(100_000):
        key = f"w{i % 100}"
        q.set(key, now[0])  # kicked by an upstream event
        q.set(key, T0 + timedelta(days=1, seconds=i % 100))  # looked at: wait a day
    assert len(q._heap) <= 2 * 100 + 1024
    for i in range(10_000):  # keys that come and go keep no generation behind
        q.set(f"gone{i}", T0)
        q.set(f"gone{i}", None)
    assert len(q._gen) <= 2 * 100 + 1024 and len(q) <= 2 * 100 + 1024
    q.set("w7", T0 - timedelta(seconds=1))  # still exact after compactions
    assert q.pop_due() == ["w7"]
    now[0] = T0 + timedelta(days=2)
    assert q.pop_due() == [f"w{i}" for i in range(100) if i != 7]
    assert q.pop_due() == [] and len(q) == 0
