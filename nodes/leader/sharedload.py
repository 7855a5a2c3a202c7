"""One read of the jobs for the shard leaders of a node that start together (D432).

With ``scheduler_shards`` K > 1 a node often wins several shards at once: at its start, and when
another node dies (its candidacies go with its lease, at one revision, and the next queued
candidacies win together). Each shard leader's job cache read every job, schedule state and
active run for itself (D411) and dropped the other shards' part: a node winning four shards of
100,000 jobs read 400,000 job documents. :class:`SharedLoad` makes it one read: the caches that
ask within ``GATHER_S`` of the first are read for together, at one revision, each job handed to
the caches that keep it (its shard's, and shard 0's, which keeps every job and active run, D302),
each schedule state to its shard's only, as the shared watches route them (D356).

Exactly once, as with a read of its own: a cache joins the node's shared watches BEFORE it asks
(``JobCache.load``), so the read's revision ``R`` is at or above the revision each watch started
from, and the cache starts its subscriptions at ``R`` (``nodes.leader.feed``). A cache that asks
once the read has begun waits for the next read. The read is a task of its own: a cache whose
term ends while it waits (a hand-over, a lost lease) leaves the others' read alone; an error of
the read (etcd unavailable) reaches every cache of it, as its own read's error would.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.shards import Shard, job_hash
from nodes.leader.loading import load_jobs

GATHER_S = 0.05  # s the first cache waits for the node's other shards won at the same moment


class Sink(Protocol):
    """What the shared read fills (a shard leader's ``JobCache``)."""

    shard: Shard
    keeps_all: bool

    def on_job(self, key: str, value: bytes | None, rev: int = 0) -> None: ...

    def on_state(self, key: str, value: bytes | None, rev: int) -> None: ...

    def on_active(self, key: str, present: bool, rev: int = 0) -> None: ...


class _Batch:
    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.sinks: list[Sink] = []
        self.task: asyncio.Task[int] | None = None


class SharedLoad:
    """The node's reads of every job for its shard leaders' caches (held by its ``Feed``)."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self._open: dict[str, _Batch] = {}  # keys.jobs() -> the batch still gathering
        self._tasks: set[asyncio.Task[int]] = set()
        self.reads = 0  # reads made (tests, logs)

    async def load(self, keys: Keys, sink: Sink) -> int:
        """Fill ``sink`` with its jobs, schedule states and active runs at one revision, read
        together with the other caches that ask meanwhile; that revision."""
        batch = self._open.get(keys.jobs())
        if batch is None:
            batch = self._open[keys.jobs()] = _Batch(keys)
            batch.task = asyncio.create_task(self._read(batch))
            self._tasks.add(batch.task)
            batch.task.add_done_callback(self._done)
        batch.sinks.append(sink)
        assert batch.task is not None
        # shielded: a cache whose term ends while it waits does not end the others' read
        return await asyncio.shield(batch.task)

    def _done(self, task: asyncio.Task[int]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    async def _read(self, batch: _Batch) -> int:
        await asyncio.sleep(GATHER_S)
        if self._open.get(batch.keys.jobs()) is batch:
            del self._open[batch.keys.jobs()]  # from here on, a cache that asks waits for the next
        sinks, keys = list(batch.sinks), batch.keys
        self.reads += 1

        def owners(key: str, base: str, every: bool) -> list[Sink]:
            parts = keys.tail(key, base)
            if len(parts) < 2:
                return []
            h = job_hash(parts[0], parts[1])
            return [s for s in sinks if (every and s.keeps_all) or s.shard.owns_hash(h)]

        def on_job(key: str, value: bytes, rev: int) -> None:
            for sink in owners(key, keys.jobs(), True):
                sink.on_job(key, value, rev)

        def on_state(key: str, value: bytes, rev: int) -> None:
            for sink in owners(key, keys.schedule_states(), False):
                sink.on_state(key, value, rev)

        rev = await load_jobs(self.etcd, keys, on_job, on_state)
        actives = await self.etcd.range_all(keys.actives(), revision=rev, keys_only=True)
        for kv in actives.kvs:
            for sink in owners(kv.key, keys.actives(), True):
                sink.on_active(kv.key, True)
        return rev

    async def aclose(self) -> None:
        """Stop the reads in flight (the node stops)."""
        self._open.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
