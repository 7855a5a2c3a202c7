"""A broken watch resumes after the last event it delivered, never after the header's revision.

etcd delivers the history a watch started in the past in batches of at most 1000 revisions, and
every such batch carries the store's *current* revision in its header (as a paged read does:
the range_pages class, D161). Resuming a broken stream from that header skipped every event
between the batch's last one and the current revision: a cache fed by ``follow`` lost them
until its next full read (a leader: until it lost the lead) — a job never scheduled, a run
never seen finished, a notification never sent (D364).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from cluster.errors import Unavailable
from cluster.etcd import Etcd, WatchBatch
from cluster.watch import follow
from tests.conftest import wait_for

N = 1200  # more revisions than etcd sends in one batch (1000)


class BreaksAfterFirstBatch:
    """The client, except that its first watch stream breaks after its first batch (a member
    failing over at that instant)."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self.broken = False
        self.starts: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.etcd, name)

    async def watch(self, key: str, *, start_revision: int, **kw: Any) -> AsyncIterator[WatchBatch]:
        self.starts.append(start_revision)
        async for batch in self.etcd.watch(key, start_revision=start_revision, **kw):
            yield batch
            if not self.broken:
                self.broken = True
                raise Unavailable("stream cut by the test")


async def _write_many(etcd: Etcd, base: str) -> int:
    first = await etcd.put(f"{base}start", b"x")
    sem = asyncio.Semaphore(32)

    async def put(i: int) -> None:
        async with sem:
            await etcd.put(f"{base}k{i:05d}", b"v")

    await asyncio.gather(*(put(i) for i in range(N)))
    return first


async def test_a_batch_of_past_history_names_the_current_revision_not_its_last_event(etcd, keys):
    """What etcd does (the reason for the fix): the first batch ends at 1000 revisions, its
    header says where the store is now; the client's batch revision is the last event's."""
    base = f"{keys.prefix}/w/"
    first = await _write_many(etcd, base)
    async for batch in etcd.watch(base, start_revision=first + 1):
        last = batch.events[-1].kv.mod_revision
        assert len(batch.events) == 1000 < N
        assert batch.revision == last  # etcd's header said first + N here
        break


async def test_a_broken_watch_resumes_after_the_last_event_and_loses_none(etcd, keys):
    base = f"{keys.prefix}/w/"
    first = await _write_many(etcd, base)
    flaky = BreaksAfterFirstBatch(etcd)
    got: set[str] = set()
    task = asyncio.create_task(
        follow(flaky, base, first, lambda ev: got.add(ev.kv.key))  # type: ignore[arg-type]
    )
    try:
        await wait_for(lambda: len(flaky.starts) >= 2, 30, what="the watch to resume")
        # the resume starts right after the first batch's last event ...
        assert flaky.starts == [first + 1, first + 1 + 1000]
        # ... so every key written arrives, none skipped
        await wait_for(lambda: len(got) >= N, 30, what=f"all {N} keys (have {len(got)})")
    finally:
        task.cancel()
    assert got == {f"{base}k{i:05d}" for i in range(N)}
