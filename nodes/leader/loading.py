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
from collections.abc import Callable

from cluster.etcd import Etcd
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
    """Every job, then every schedule state, at one revision; that revision."""
    rev = 0
    async for page in etcd.range_pages(keys.jobs()):
        rev = page.revision
        for kv in page.kvs:
            on_job(kv.key, kv.value, kv.mod_revision)
        gctune.settle()  # kept for as long as we lead: never walked by a collection
        await asyncio.sleep(0)
    async for page in etcd.range_pages(keys.schedule_states(), revision=rev):
        rev = page.revision
        for kv in page.kvs:
            on_state(kv.key, kv.value, kv.mod_revision)
        await asyncio.sleep(0)
    return rev
