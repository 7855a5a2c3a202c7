"""The shard leaders of one node that start together read the jobs once (D432), against a real
etcd: each cache gets what a read of its own would have given it (its shard's jobs, states and
active runs; shard 0 every job and active run), and what changes during and after the read
reaches it once through the node's shared watches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from cluster.errors import Unavailable
from cluster.ids import Snowflake
from cluster.models import JobSpec
from cluster.shards import Shard, shard_of
from cluster.store import Store
from nodes.leader import sharedload
from nodes.leader.feed import Feed
from nodes.leader.jobcache import JobCache
from tests.conftest import wait_for

K = 4
JOBS = [f"j{i:02d}" for i in range(24)]
T = TypeVar("T")


async def step(aw: Awaitable[T], what: str, timeout: float = 30.0) -> T:
    async with asyncio.timeout(timeout):
        try:
            return await aw
        except TimeoutError:
            raise AssertionError(f"{what} took over {timeout}s") from None


def mine(shard: int) -> set[tuple[str, str]]:
    return {("p", n) for n in JOBS if shard_of("p", n, K) == shard}


def cache(etcd, keys, feed: Feed, shard: int) -> JobCache:
    return JobCache(etcd, keys, clock=lambda: datetime.now(UTC), shard=Shard(shard, K), feed=feed)


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """[reads of the jobs prefix the node made]."""
    reads = [0]
    real = sharedload.load_jobs

    async def load_jobs(*args, **kwargs):  # type: ignore[no-untyped-def]
        reads[0] += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(sharedload, "load_jobs", load_jobs)
    return reads


async def seed(etcd, keys) -> Store:
    store = Store(etcd, keys, Snowflake(7), lambda: datetime.now(UTC))
    for name in JOBS:
        await store.put_job("p", JobSpec(name=name, command="true"))
    for s in range(K):
        name = sorted(mine(s))[0][1]
        await etcd.put(keys.schedule_state("p", name), f'{{"mark": {s}}}'.encode())
        await etcd.put(keys.active("p", name, f"r{s}"), b"")
    return store


async def test_shards_won_together_read_the_jobs_once_and_each_keeps_its_own(
    etcd, keys, monkeypatch
):
    reads = counting(monkeypatch)
    # the window the product gives a node's shards to ask together, long enough for a busy
    # machine (the three join the shared watches first)
    monkeypatch.setattr(sharedload, "GATHER_S", 1.0)
    store = await seed(etcd, keys)
    feed = Feed(etcd)
    caches = {s: cache(etcd, keys, feed, s) for s in (0, 1, 2)}
    revs = await step(asyncio.gather(*(c.load() for c in caches.values())), "the loads")
    assert reads[0] == 1 and feed.loads.reads == 1  # one read for the three shards
    assert len(set(revs)) == 1
    every = {("p", n) for n in JOBS}
    assert set(caches[0].jobs) == every  # shard 0 keeps every job (D302)
    for s in (1, 2):
        assert set(caches[s].jobs) == mine(s)
        assert set(caches[s].active_job) == {f"r{s}"}
    assert set(caches[0].active_job) == {f"r{s}" for s in range(K)}  # every active run
    for s in (0, 1, 2):  # each shard's own states only
        for jk, entry in caches[s].jobs.items():
            own = jk in mine(s) and entry.state_rev
            assert entry.state == ({"mark": s} if own else {}), (s, jk)
    assert sum(bool(e.state) for e in caches[0].jobs.values()) == 1

    # what changes after the read reaches the caches once, through the shared watches
    async def follow_all() -> None:
        async with asyncio.TaskGroup() as tg:
            for c, rev in zip(caches.values(), revs, strict=True):
                c.follow(tg, rev)

    following = asyncio.create_task(follow_all())
    new = next(n for n in (f"k{i}" for i in range(99)) if shard_of("p", n, K) == 2)
    await store.put_job("p", JobSpec(name=new, command="true"))
    await wait_for(lambda: ("p", new) in caches[2].jobs, what="the new job in shard 2's cache")
    await wait_for(lambda: ("p", new) in caches[0].jobs, what="the new job in shard 0's cache")
    assert ("p", new) not in caches[1].jobs
    following.cancel()
    await step(asyncio.gather(following, return_exceptions=True), "the follows to end")
    for c in caches.values():
        c.close()
    await step(feed.aclose(), "the feed to close")


async def test_a_cache_that_asks_once_the_read_began_gets_a_read_of_its_own(
    etcd, keys, monkeypatch
):
    reads = counting(monkeypatch)
    await seed(etcd, keys)
    feed = Feed(etcd)
    first = asyncio.create_task(cache(etcd, keys, feed, 1).load())
    await wait_for(lambda: reads[0] == 1, what="the first read to begin")
    late = cache(etcd, keys, feed, 3)
    await step(asyncio.gather(first, late.load()), "both loads")
    assert reads[0] == 2
    assert set(late.jobs) == mine(3)
    late.close()
    await step(feed.aclose(), "the feed to close")


async def test_a_term_that_ends_while_waiting_leaves_the_others_read_alone(etcd, keys, monkeypatch):
    counting(monkeypatch)
    monkeypatch.setattr(sharedload, "GATHER_S", 2.0)  # the cancel comes while it gathers
    await seed(etcd, keys)
    feed = Feed(etcd)
    gone, kept = cache(etcd, keys, feed, 1), cache(etcd, keys, feed, 2)
    t_gone = asyncio.create_task(gone.load())
    t_kept = asyncio.create_task(kept.load())
    await wait_for(lambda: feed.subscribers(keys.jobs()) == 2, what="both caches joined")
    t_gone.cancel()  # e.g. a hand-over right after winning
    await step(asyncio.gather(t_gone, return_exceptions=True), "the cancelled load")
    gone.close()
    await step(t_kept, "the other cache's load")
    assert set(kept.jobs) == mine(2)
    kept.close()
    await step(feed.aclose(), "the feed to close")


async def test_an_error_of_the_shared_read_reaches_every_cache_of_it(etcd, keys, monkeypatch):
    async def fails(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise Unavailable("etcd is away")

    monkeypatch.setattr(sharedload, "load_jobs", fails)
    feed = Feed(etcd)
    caches = [cache(etcd, keys, feed, s) for s in (1, 2)]
    out = await step(asyncio.gather(*(c.load() for c in caches), return_exceptions=True), "loads")
    assert all(isinstance(o, Unavailable) for o in out), out
    for c in caches:
        c.close()
    await step(feed.aclose(), "the feed to close")
