"""A node's shard leaders share one watch per prefix (``nodes.leader.feed``, D356), against a real
etcd: an event is decoded once per node and reaches only the leader of the shard that owns its
key (and the subscribers that keep every job); a leader that joins late, reads slowly, or takes a
shard over from another node's leader misses no event and applies none twice."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from cluster.errors import Unavailable
from cluster.etcd import Etcd, Event, Op, WatchBatch
from cluster.shards import Shard, shard_of
from nodes.leader import feed as feed_module
from nodes.leader.feed import Feed, FeedOverflow, Subscription
from tests.conftest import wait_for

JOBS = [f"j{i:02d}" for i in range(40)]
T = TypeVar("T")


class View:
    """What a shard leader's cache would hold of one prefix: key -> (value, mod revision)."""

    def __init__(self, prefix: str, shard: Shard, every: bool = False) -> None:
        self.prefix, self.shard, self.every = prefix, shard, every
        self.kv: dict[str, tuple[bytes, int]] = {}
        self.read_at = 0
        self.applied: list[int] = []  # the revision of every event handed over, in order

    def mine(self, key: str) -> bool:
        project, name = key[len(self.prefix) :].split("/")[:2]
        return self.every or self.shard.owns(project, name)

    def handle(self, ev: Event) -> None:
        assert self.mine(ev.kv.key), f"{ev.kv.key} reached {self.shard}"
        assert ev.kv.mod_revision > self.read_at, "an event already in the read, applied again"
        self.applied.append(ev.kv.mod_revision)
        if ev.kind == "put":
            self.kv[ev.kv.key] = (ev.kv.value, ev.kv.mod_revision)
        else:
            self.kv.pop(ev.kv.key, None)

    def known(self) -> set[str]:
        return set(self.kv)

    async def read(self, etcd: Etcd) -> int:
        res = await etcd.range_all(self.prefix)
        self.kv = {kv.key: (kv.value, kv.mod_revision) for kv in res.kvs if self.mine(kv.key)}
        self.read_at = res.revision
        return res.revision


async def truth(etcd: Etcd, view: View) -> dict[str, tuple[bytes, int]]:
    res = await etcd.range_all(view.prefix)
    return {kv.key: (kv.value, kv.mod_revision) for kv in res.kvs if view.mine(kv.key)}


async def join(feed: Feed, view: View, etcd: Etcd) -> tuple[Subscription, asyncio.Task[None]]:
    """A shard leader's start: subscribe, read, start at the read's revision."""
    sub = await feed.subscribe(view.prefix, view.shard, view.handle, view.known, every=view.every)
    rev = await view.read(etcd)
    return sub, asyncio.create_task(sub.run(rev))


async def leave(sub: Subscription, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    sub.close()


def count_decoded(etcd: Etcd, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """[events the client's watch streams decoded]: each stream decodes its own copy."""
    decoded = [0]
    watch = etcd.watch

    def counting(key: str, **kw: Any) -> AsyncIterator[WatchBatch]:
        async def stream() -> AsyncIterator[WatchBatch]:
            async for batch in watch(key, **kw):
                decoded[0] += len(batch.events)
                yield batch

        return stream()

    monkeypatch.setattr(etcd, "watch", counting)
    return decoded


async def test_a_key_of_shard_i_reaches_only_shard_is_leader_and_is_decoded_once(
    etcd, keys, monkeypatch
):
    prefix = keys.schedule_states()
    decoded = count_decoded(etcd, monkeypatch)
    feed = Feed(etcd)
    views = [View(prefix, Shard(i, 4)) for i in range(4)] + [View(prefix, Shard(0, 4), True)]
    joined = [await join(feed, v, etcd) for v in views]
    assert feed.watching() == [prefix] and feed.subscribers(prefix) == 5  # one watch, 5 leaders
    for name in JOBS:
        await etcd.put(keys.schedule_state("p", name), b"{}")
    want = {
        i: {keys.schedule_state("p", n) for n in JOBS if shard_of("p", n, 4) == i} for i in range(4)
    }
    assert all(want.values())  # every shard has jobs, else the test proves nothing
    ended = lambda: any(task.done() for _, task in joined)  # noqa: E731 (a handler failed)
    await wait_for(lambda: len(views[4].kv) == len(JOBS) or ended(), what="every job's key")
    for i in range(4):
        await wait_for(lambda i=i: set(views[i].kv) == want[i] or ended(), what=f"shard {i}")
        assert not ended(), [task for _, task in joined if task.done()]
        assert set(views[i].kv) == want[i]
        assert len(views[i].applied) == len(want[i])  # its own keys, and nothing else
    # the node decoded each event once, not once per shard leader
    assert decoded[0] == len(JOBS)
    for sub, task in joined:
        await leave(sub, task)
    assert feed.watching() == []  # the last leader gone, the watch stops
    await feed.aclose()


async def write_load(etcd: Etcd, prefix: str, stop: asyncio.Event, seed: int) -> int:
    """Puts and deletes of random jobs' keys until ``stop``; how many writes."""
    rnd, n = random.Random(seed), 0
    while not stop.is_set():
        name = rnd.choice(JOBS)
        key = f"{prefix}p/{name}"
        if rnd.random() < 0.2:
            await etcd.txn([], [Op.delete(key)])
        else:
            await etcd.txn([], [Op.put(key, f"v{n}")])
        n += 1
        await asyncio.sleep(0.002)
    return n


async def test_a_hand_over_loses_no_event(etcd, etcd_server, keys, monkeypatch):
    """Under a steady stream of puts and deletes: shard 1's leader on node A hands the shard to
    node B (A's last subscriber leaves, its watch stops; B reads and follows); B's other shard
    joins B's running watch late; a leader holds events through a slow read; A takes a shard
    again (its watch restarts). Every view ends equal to etcd, each event applied once, in order."""
    prefix = keys.schedule_states()
    async with Etcd([etcd_server.endpoint]) as etcd_b:
        decoded_b = count_decoded(etcd_b, monkeypatch)
        node_a, node_b = Feed(etcd), Feed(etcd_b)
        stop = asyncio.Event()
        writer = asyncio.create_task(write_load(etcd, prefix, stop, seed=23))
        a1 = View(prefix, Shard(1, 2))
        sub_a1, task_a1 = await join(node_a, a1, etcd)
        b0 = View(prefix, Shard(0, 2), every=True)  # shard 0's cache keeps every job
        sub_b0, task_b0 = await join(node_b, b0, etcd_b)
        await asyncio.sleep(0.3)
        # hand-over of shard 1 from A to B: A's leader stops first, then B's starts
        await leave(sub_a1, task_a1)
        assert node_a.watching() == []
        b1 = View(prefix, Shard(1, 2))
        sub_b1 = await node_b.subscribe(prefix, b1.shard, b1.handle, b1.known)
        # a slow read: B's shard-1 leader reads after more writes; they are held meanwhile
        await wait_for(lambda: sub_b1.pending, what="events held during the read")
        rev = await b1.read(etcd_b)
        task_b1 = asyncio.create_task(sub_b1.run(rev))
        await asyncio.sleep(0.3)
        a0 = View(prefix, Shard(0, 2))  # node A leads again: its watch restarts
        sub_a0, task_a0 = await join(node_a, a0, etcd)
        await asyncio.sleep(0.3)
        stop.set()
        writes = await writer
        assert writes > 100  # the hand-over happened under load
        tasks = {b0: task_b0, b1: task_b1, a0: task_a0}
        for v, task in tasks.items():
            want = await truth(etcd, v)
            await wait_for(lambda v=v, w=want, t=task: v.kv == w or t.done(), what=f"{v.shard}")
            assert not task.done(), task  # a subscription ends only when its handler failed
            assert v.kv == want
            assert v.applied == sorted(set(v.applied))  # in order, none twice
        assert b1.applied and a0.applied  # each followed events after its read
        assert decoded_b[0] <= writes  # one watch on B for its two leaders
        for sub, task in ((sub_b0, task_b0), (sub_b1, task_b1), (sub_a0, task_a0)):
            await leave(sub, task)
        await node_a.aclose()
        await node_b.aclose()


async def test_an_error_ends_only_its_own_subscription(etcd, keys, monkeypatch):
    prefix = keys.actives()
    feed = Feed(etcd)
    good = View(prefix, Shard(0, 1))
    broken = View(prefix, Shard(0, 1))

    def explode(ev: Event) -> None:
        raise RuntimeError("a bad handler")

    sub_good, task_good = await join(feed, good, etcd)
    sub_bad = await feed.subscribe(prefix, broken.shard, explode, broken.known)
    task_bad = asyncio.create_task(sub_bad.run(await broken.read(etcd)))
    await etcd.put(keys.active("p", "j", "r1"), b"")
    with pytest.raises(RuntimeError, match="a bad handler"):
        await asyncio.wait_for(task_bad, 10)
    await etcd.put(keys.active("p", "j", "r2"), b"")
    await wait_for(lambda: len(good.kv) == 2, what="the other leader goes on")
    assert not task_good.done()
    sub_bad.close()
    # a leader whose read outlasts MAX_PENDING held events: its term ends, bounded
    monkeypatch.setattr(feed_module, "MAX_PENDING", 3)
    slow = View(prefix, Shard(0, 1))
    sub_slow = await feed.subscribe(prefix, slow.shard, slow.handle, slow.known)
    for i in range(5):
        await etcd.put(keys.active("p", "j", f"s{i}"), b"")
    await wait_for(lambda: sub_slow.error is not None, what="the overflow")
    with pytest.raises(FeedOverflow):
        await asyncio.wait_for(sub_slow.run(0), 10)
    assert len(sub_slow.pending) == 0 and not slow.applied
    sub_slow.close()
    # ... and by the bytes held (a job event carries its document)
    monkeypatch.setattr(feed_module, "MAX_PENDING", 1000)
    monkeypatch.setattr(feed_module, "MAX_PENDING_BYTES", 10_000)
    big = View(prefix, Shard(0, 1))
    sub_big = await feed.subscribe(prefix, big.shard, big.handle, big.known)
    for i in range(3):
        await etcd.put(keys.active("p", "j", f"b{i}"), b"x" * 6_000)
    await wait_for(lambda: sub_big.error is not None, what="the overflow by bytes")
    assert isinstance(sub_big.error, FeedOverflow) and sub_big.pending_bytes == 0
    sub_big.close()
    await leave(sub_good, task_good)
    await feed.aclose()


async def step(aw: Awaitable[T], what: str, timeout: float = 30.0) -> T:
    """``aw`` within ``timeout``, else a failure naming the step (CI once timed this test out at
    120 s with no sign of which await never returned)."""
    try:
        return await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        raise AssertionError(f"{what}: not done within {timeout}s") from None


async def test_two_shard_leaders_of_one_node_share_the_watches_and_keep_their_own(
    etcd, keys, monkeypatch
):
    """The wiring (D356): the job caches of shards 0 and 1 of one node follow jobs and active
    runs through one watch each (schedule states are read, not followed: D433); shard 1's cache
    gets shard 1's jobs only, shard 0's every job and active run; shard 1's next leader on the
    node starts while shard 0's keeps the watches running, and misses nothing."""
    from cluster.election import Election
    from cluster.ids import Snowflake
    from cluster.models import JobSpec
    from cluster.session import Session
    from cluster.shards import election_name
    from cluster.store import Store
    from nodes.leader.scheduler import Scheduler

    decoded = count_decoded(etcd, monkeypatch)
    store = Store(etcd, keys, Snowflake(7), lambda: datetime.now(UTC))
    names = {s: [n for n in JOBS if shard_of("p", n, 2) == s][:3] for s in (0, 1)}
    for name in names[0] + names[1][:2]:
        await store.put_job("p", JobSpec(name=name, command="true"))
    session = await Session.open(etcd, 5)
    feed = Feed(etcd)

    async def lead(s: int) -> tuple[Scheduler, asyncio.Task[None]]:
        leadership = await Election(etcd, keys, session, "n1", election_name(s)).campaign()
        sched = Scheduler(
            etcd,
            keys,
            store,
            leadership,
            clock=lambda: datetime.now(UTC),
            node_id="n1",
            shard=Shard(s, 2),
            feed=feed,
        )
        task = asyncio.create_task(sched.run())
        return sched, task

    s0, t0 = await step(lead(0), "shard 0's campaign")
    s1, t1 = await step(lead(1), "shard 1's campaign")
    watched = [keys.actives(), keys.jobs()]  # schedule states: read, not followed (D433)
    await wait_for(lambda: feed.watching() == watched, what="the node's watches")
    await wait_for(lambda: all(feed.subscribers(p) == 2 for p in watched), what="both leaders")
    new = names[1][2]  # a job of shard 1 created while both lead
    base = decoded[0]
    await step(store.put_job("p", JobSpec(name=new, command="true")), "the new job's write")
    await wait_for(lambda: ("p", new) in s1.jobs and ("p", new) in s0.jobs, what="the new job")
    # the leaders subscribe before they read: under load their reads may come after the write
    # and hold the job already, while the shared stream still has its event to deliver (CI)
    await wait_for(lambda: decoded[0] > base, what="the new job's event")
    before = decoded[0]
    for s in (0, 1):  # a state written behind the leaders' backs, then an active run
        await etcd.put(keys.schedule_state("p", names[s][0]), b'{"mark": 1}')
        await etcd.put(keys.active("p", names[s][0], f"r{s}"), b"")
    await wait_for(lambda: decoded[0] - before >= 2, what="two events")
    await wait_for(lambda: set(s0.active_job) == {"r0", "r1"}, what="shard 0 keeps every run")
    assert set(s1.jobs) == {("p", n) for n in names[1]}  # its own jobs only
    assert set(s1.active_job) == {"r1"}
    # schedule states are not followed (D433): a tick's state CAS finds such a write
    assert s1.jobs[("p", names[1][0])].state == {}
    assert s0.jobs[("p", names[0][0])].state == {}
    # each active event decoded once for the node's two leaders, and no state event (they come
    # before the second active event in revision order, so they would have been decoded)
    assert decoded[0] - before == 2
    # shard 1 goes to another leader on this node while shard 0 keeps the watches running
    t1.cancel()
    await step(asyncio.gather(t1, return_exceptions=True), "shard 1's term to end on cancel")
    assert all(feed.subscribers(p) == 1 for p in watched)
    await etcd.put(keys.schedule_state("p", names[1][1]), b'{"mark": 2}')  # between the terms
    s1b, t1b = await step(lead(1), "shard 1's second campaign")
    await etcd.put(keys.active("p", names[1][1], "r2"), b"")
    await wait_for(lambda: set(s1b.active_job) == {"r1", "r2"}, what="the new leader's runs")
    assert s1b.jobs[("p", names[1][1])].state == {"mark": 2}
    assert set(s1b.jobs) == {("p", n) for n in names[1]}
    for task in (t0, t1b):
        task.cancel()
    await step(asyncio.gather(t0, t1b, return_exceptions=True), "both terms to end on cancel")
    assert feed.watching() == []
    await step(feed.aclose(), "the feed to close")
    await step(session.close(), "the session to close")


async def test_a_shared_watch_that_ends_ends_every_subscribers_term_and_starts_again(
    etcd, keys, monkeypatch
):
    """An error the watch does not retry ends every leader's term on the node (each campaigns
    again), as with watches of their own; the next subscriber starts a new watch."""
    prefix = keys.schedule_states()
    feed = Feed(etcd)
    watch = etcd.watch
    broken = [True]

    def failing(key: str, **kw: Any) -> AsyncIterator[WatchBatch]:
        async def stream() -> AsyncIterator[WatchBatch]:
            async for batch in watch(key, **kw):
                if broken[0]:
                    raise RuntimeError("a stream that cannot go on")
                yield batch

        return stream()

    monkeypatch.setattr(etcd, "watch", failing)
    views = [View(prefix, Shard(i, 2)) for i in range(2)]
    joined = [await join(feed, v, etcd) for v in views]
    await etcd.put(keys.schedule_state("p", "j01"), b"{}")
    for _, task in joined:
        with pytest.raises(Unavailable, match="shared watch"):
            await asyncio.wait_for(task, 10)
    for sub, _ in joined:
        sub.close()
    assert feed.watching() == []
    broken[0] = False
    again = View(prefix, Shard(0, 1))
    sub, task = await join(feed, again, etcd)
    await etcd.put(keys.schedule_state("p", "j02"), b"{}")
    await wait_for(lambda: keys.schedule_state("p", "j02") in again.kv, what="a new watch")
    await leave(sub, task)
    await feed.aclose()


async def test_each_job_is_hashed_once_and_only_its_shards_leaders_are_visited(
    etcd, keys, monkeypatch
):
    """D482: a node leading shards 1 and 3 of 8 (and shard 0, which keeps every job) routes every
    event by its job's shard with one look-up: the job's hash is computed once per job, not once
    per event (a SHA-1 per event and per tick before), and a leader of another shard is not
    visited at all."""
    from cluster import shards as shards_module

    prefix = keys.actives()
    shards_module.job_hash.cache_clear()
    hashed: list[str] = []
    real = shards_module._hash64
    monkeypatch.setattr(shards_module, "_hash64", lambda text: hashed.append(text) or real(text))
    visited: dict[str, int] = {}
    deliver = Subscription.deliver

    def counting(self: Subscription, ev: Event) -> None:
        visited[repr(self.shard)] = visited.get(repr(self.shard), 0) + 1
        deliver(self, ev)

    monkeypatch.setattr(Subscription, "deliver", counting)
    feed = Feed(etcd)
    views = [View(prefix, Shard(1, 8)), View(prefix, Shard(3, 8)), View(prefix, Shard(0, 8), True)]
    joined = [await join(feed, v, etcd) for v in views]
    jobs = JOBS[:16]
    rounds = 3
    for r in range(rounds):
        for name in jobs:
            await etcd.put(f"{prefix}p/{name}/run{r}", b"")
    own = {i: [n for n in jobs if shard_of("p", n, 8) == i] for i in (1, 3)}
    assert own[1] and own[3] and len(own[1]) + len(own[3]) < len(jobs)  # else it proves nothing
    await wait_for(lambda: len(views[2].kv) == rounds * len(jobs), what="every job's events")
    for i, view in zip((1, 3), views, strict=False):
        await wait_for(lambda v=view, i=i: len(v.kv) == rounds * len(own[i]), what=f"shard {i}")
    assert sorted(hashed) == sorted(f"p/{n}" for n in jobs)  # once per job, not per event
    assert visited == {
        "Shard(1/8)": rounds * len(own[1]),
        "Shard(3/8)": rounds * len(own[3]),
        "Shard(0/8)": rounds * len(jobs),
    }
    for sub, task in joined:
        await leave(sub, task)
    await feed.aclose()
