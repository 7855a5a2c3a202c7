"""A paged read is one snapshot: every page at the first page's revision, and that is the
revision it answers, even when keys are written between two pages.

etcd's range answer carries the store's *current* revision in its header, also for a read at an
older revision. Taking that header as the reader's revision moved a new leader's load past a
job written while it paged, and the watch that went on from there never saw that job: it was
never scheduled (the CI failure of stop 28, ~1 in 3 runs of
``test_leader_starts_and_schedules_others_despite_a_huge_project``)."""

from __future__ import annotations

import asyncio

from cluster.watch import follow
from tests.conftest import wait_for


async def test_pages_keep_the_first_revision_and_a_watch_from_it_sees_later_writes(etcd, keys):
    base = keys.jobs("p")
    for i in range(4):
        await etcd.put(f"{base}k{i}", b"v")
    first = 0
    seen: list[str] = []
    async for page in etcd.range_pages(base, page_keys=1):
        first = first or page.revision
        assert page.revision == first  # never the header's later revision
        seen += [kv.key for kv in page.kvs]
        await etcd.put(f"{base}z{len(seen)}", b"written while paging")
    # a snapshot: the keys written during the read are not in it ...
    assert seen == [f"{base}k{i}" for i in range(4)]
    # ... and a watch from its revision delivers every one of them
    got: list[str] = []
    task = asyncio.create_task(follow(etcd, base, first, lambda ev: got.append(ev.kv.key)))
    try:
        await wait_for(lambda: len(got) >= 4, 10, what="the writes made during the read")
    finally:
        task.cancel()
    assert got == [f"{base}z{n}" for n in range(1, 5)]

    everything = await etcd.range_all(base, page_keys=1)
    assert len(everything.kvs) == 8
