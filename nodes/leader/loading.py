"""A new leader's load of what it keeps in memory (D262): prefixes read at one revision page by
page, each page decoded and dropped before the next is read, the loop free in between, and what
was kept moved out of the collector's sight (100,000 jobs are millions of objects: a collection
walking them stalled the loop for seconds, and the lease lapsed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from cluster.etcd import KV, Etcd
from nodes.runtime import gctune


async def load_pages(
    etcd: Etcd, prefixes: Sequence[str], handlers: Sequence[Callable[[KV], None]]
) -> int:
    """Every key of ``prefixes`` at one revision, each given to its handler; the revision."""
    rev = 0
    for prefix, handle in zip(prefixes, handlers, strict=True):
        async for page in etcd.range_pages(prefix, revision=rev):
            rev = page.revision
            for kv in page.kvs:
                handle(kv)
            gctune.settle()  # kept for as long as we lead: never walked by a collection
            await asyncio.sleep(0)
    return rev
