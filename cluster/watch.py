"""Follow a prefix after reading it: the one read-then-watch loop of the leader's caches.

The caller has read the prefix at revision ``rev`` and filled its cache; :func:`follow` streams
every change after ``rev`` into ``handle``. A broken stream resumes from the newest revision
delivered (etcd's header revision: every change up to it has been seen), with a backoff of
0.1 s doubling to 2 s. When that revision has been compacted away, the prefix is read again and
handed over as puts; every key ``known()`` names (what the caller's cache holds) that is no longer
present is handed over as a deletion first, so no cache keeps an entry whose deletion fell into
the compacted history (D191).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from cluster.errors import Unavailable
from cluster.etcd import KV, Compacted, Etcd, Event

log = structlog.get_logger(__name__)

Handler = Callable[[Event], None]
KnownKeys = Callable[[], set[str]]


async def follow(
    etcd: Etcd,
    prefix: str,
    rev: int,
    handle: Handler,
    known: KnownKeys | None = None,
    *,
    what: str = "leader watch",
) -> None:
    """Stream the changes of ``prefix`` after ``rev`` into ``handle``; returns only by error
    (other than :class:`Unavailable` and :class:`Compacted`, which it handles) or cancellation."""
    delay = 0.1
    while True:
        try:
            async for batch in etcd.watch(prefix, start_revision=rev + 1):
                delay = 0.1
                for ev in batch.events:
                    handle(ev)
                rev = max(rev, batch.revision)
        except Compacted:
            rev = await resync(etcd, prefix, handle, known)
        except Unavailable as exc:
            log.info(f"{what} interrupted; resuming", prefix=prefix, error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def resync(etcd: Etcd, prefix: str, handle: Handler, known: KnownKeys | None) -> int:
    """Read ``prefix`` again: deletions of the known keys that are gone, then every key as a put;
    answers the revision read at."""
    res = await etcd.range_all(prefix)
    present = {kv.key for kv in res.kvs}
    cached = known() if known is not None else set()
    for key in sorted(cached - present):
        handle(Event("delete", KV(key, b"", 0, res.revision, 0, 0)))
    for kv in res.kvs:
        handle(Event("put", kv))
    return res.revision
