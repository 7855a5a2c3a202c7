"""Follow a prefix after reading it: the one read-then-watch loop of every cache of a node.

The caller has read the prefix at revision ``rev`` and filled its cache (or passes ``rev=None``:
:func:`follow` reads it first); :func:`follow` streams every change after that revision into
``handle``. A broken stream resumes from the newest revision delivered (etcd's header revision:
every change up to it has been seen), with a backoff of 0.1 s doubling to 2 s. When that
revision has been compacted away, the prefix is read again and handed over as puts; every key
``known()`` names (what the caller's cache holds) that is no longer present is handed over as a
deletion first, so no cache keeps an entry whose deletion fell into the compacted history (D191).

The resume rules the callers differ in (D213):

- ``reread``: every broken stream is read again rather than resumed (the worker's queue and
  controls and the placement view rebuild their state from a fresh read after any break);
- ``reset``: a read starts by clearing the cache (instead of synthesizing deletions from
  ``known``), so a key deleted while the stream was down is gone whatever the cache holds for it;
- ``on_read(revision)`` after each (re-)read, ``on_batch(batch, revision)`` after each batch's
  events were handled (``revision``: the stream's position, as it would resume);
- ``on_compacted(exc)``: instead of a re-read, answers the revision to go on from (the notifier,
  which caches nothing, skips to now and counts what it dropped);
- ``retry_on``: the errors that are retried (default: :class:`Unavailable`), for a loop that must
  never end its owner's term;
- ``skip`` ("put" or "delete"): etcd leaves those events out of the stream (D349); a re-read still
  hands every present key over as a put, and synthesized deletions are not skipped;
- ``end``: follow the keys ``[prefix, end)`` rather than the prefix (the notifier follows the run
  index and the jobs, its neighbour, in one watch: one order for both, D410).

A re-read or an ``on_compacted`` that fails with a retried error is retried after the backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from cluster.errors import Unavailable
from cluster.etcd import KV, Compacted, Etcd, Event, Skip, WatchBatch

log = structlog.get_logger(__name__)

Handler = Callable[[Event], None]
KnownKeys = Callable[[], set[str]]


def by_key(handle: Callable[[str, KV | None], None]) -> Handler:
    """A handler of events for a cache keyed by etcd key: (key, kv) for a put, (key, None) for a
    deletion."""

    def on_event(ev: Event) -> None:
        handle(ev.kv.key, ev.kv if ev.kind == "put" else None)

    return on_event


async def follow(
    etcd: Etcd,
    prefix: str,
    rev: int | None,
    handle: Handler,
    known: KnownKeys | None = None,
    *,
    what: str = "leader watch",
    reread: bool = False,
    reset: Callable[[], None] | None = None,
    on_read: Callable[[int], None] | None = None,
    on_batch: Callable[[WatchBatch, int], None] | None = None,
    on_compacted: Callable[[Compacted], Awaitable[int]] | None = None,
    retry_on: tuple[type[Exception], ...] = (Unavailable,),
    skip: Skip | None = None,
    end: str | None = None,
) -> None:
    """Stream the changes of ``prefix`` after ``rev`` into ``handle`` (``rev`` None: read the
    prefix first); returns only by an error not in ``retry_on`` (a :class:`Compacted` is always
    handled) or cancellation."""
    delay = 0.1
    read = rev is None  # the prefix is to be (re-)read before watching
    compacted: Compacted | None = None
    position = rev or 0
    while True:
        try:
            if compacted is not None and on_compacted is not None:
                position = await on_compacted(compacted)
                compacted = None
            if read:
                position = await resync(etcd, prefix, handle, known, reset=reset, end=end)
                read = False
                if on_read is not None:
                    on_read(position)
            watch = etcd.watch(prefix, start_revision=position + 1, skip=skip, end=end)
            async for batch in watch:
                delay = 0.1
                for ev in batch.events:
                    handle(ev)
                position = max(position, batch.revision)
                if on_batch is not None:
                    on_batch(batch, position)
        except Compacted as exc:
            if on_compacted is None:
                read = True
            else:
                compacted = exc
        except retry_on as exc:
            again = "re-reading" if reread or read else "resuming"
            log.info(f"{what} interrupted; {again}", prefix=prefix, error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            read = read or reread


async def follow_puts(
    etcd: Etcd, prefix: str, rev: int | None, handle: Handler, known: KnownKeys | None = None
) -> None:
    """:func:`follow` for a handler that ignores deletions: etcd leaves them out (D349)."""
    await follow(etcd, prefix, rev, handle, known, skip="delete")


async def resync(
    etcd: Etcd,
    prefix: str,
    handle: Handler,
    known: KnownKeys | None,
    *,
    reset: Callable[[], None] | None = None,
    end: str | None = None,
) -> int:
    """Read ``prefix`` (``[prefix, end)``) again: ``reset()`` or deletions of the known keys that
    are gone, then every key as a put; answers the revision read at."""
    res = await etcd.range_all(prefix, end=end)
    if reset is not None:
        reset()
    else:
        present = {kv.key for kv in res.kvs}
        cached = known() if known is not None else set()
        for key in sorted(cached - present):
            handle(Event("delete", KV(key, b"", 0, res.revision, 0, 0)))
    for kv in res.kvs:
        handle(Event("put", kv))
    return res.revision
