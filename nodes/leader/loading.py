"""A new leader's load of what it keeps in memory, and how its first pass over every job is cut
(D262). Prefixes are read at one revision page by page, each page decoded and dropped before the
next is read, the loop free in between, and what was kept is moved out of the collector's sight
(100,000 jobs are millions of objects: a collection walking them stalled the loop for seconds,
and the lease lapsed). The tick loop then takes at most ``PASS_JOBS`` due jobs at a time (a new
leader's first pass covers every job; the rest stay queued at their instants, the earliest
first) and yields to the loop every ``YIELD_EVERY`` plans: keep-alives, the API and the workers
run meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import cast

from cluster.etcd import Etcd, Range, prefix_end
from cluster.keys import Keys
from nodes.runtime import gctune

YIELD_EVERY = 256
PASS_JOBS = 2000


async def load_jobs(
    etcd: Etcd,
    keys: Keys,
    on_job: Callable[[str, bytes, int], None],
    on_state: Callable[[str, bytes, int], None],
) -> int:
    """Every job, then every schedule state, at one revision; that revision.

    The first page of schedule states is read while the jobs' pages are (at the revision of the
    first one), and handed over after the last job: one round trip fewer on the way to leading
    (a new leader under load waits for etcd at each, D411), and at most one page held ahead."""
    rev = 0
    ahead: asyncio.Task[Range] | None = None
    try:
        async for page in etcd.range_pages(keys.jobs()):
            rev = page.revision
            if ahead is None:
                ahead = asyncio.create_task(_first_page(etcd, keys.schedule_states(), rev))
            for kv in page.kvs:
                on_job(kv.key, kv.value, kv.mod_revision)
            gctune.settle()  # kept for as long as we lead: never walked by a collection
            await asyncio.sleep(0)
        assert ahead is not None  # range_pages yields at least one page
        first = await ahead
    except BaseException:
        if ahead is not None:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)
        raise
    for kv in first.kvs:
        on_state(kv.key, kv.value, kv.mod_revision)
    if first.more and first.kvs:
        after = first.kvs[-1].key + "\x00"
        end = prefix_end(keys.schedule_states()).decode("latin-1")
        async for page in etcd.range_pages(after, end=end, revision=rev):
            for kv in page.kvs:
                on_state(kv.key, kv.value, kv.mod_revision)
            await asyncio.sleep(0)
    return rev


async def _first_page(etcd: Etcd, prefix: str, rev: int) -> Range:
    read = cast("AsyncGenerator[Range, None]", etcd.range_pages(prefix, revision=rev))
    async with contextlib.aclosing(read) as pages:
        async for page in pages:
            return page
    raise AssertionError("range_pages yields at least one page")
