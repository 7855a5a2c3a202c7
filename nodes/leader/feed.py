"""One watch per prefix per node, shared by the shard leaders on it (D356).

Every shard leader keeps its jobs, their schedule states and their active runs in a job cache
(``nodes.leader.jobcache``) fed by watches of ``jobs/``, ``schedule-state/`` and ``active/``. With
a watch of its own per shard, a node leading four shards decoded every event of those prefixes
four times. A :class:`Feed` holds ONE watch per prefix for the node, started when the first shard
leader subscribes and stopped when the last one leaves, and routes each event by the job in its
key (``<prefix>/<project>/<name>/...``): the hash is kept per job (D482), and the event goes
to the subscriber of the shard that owns it, and to the subscribers that keep every job (shard 0's
cache, D302).

A subscriber's revisions are its own, whatever the shared watch has delivered before it came:

1. it subscribes before it reads (:meth:`Feed.subscribe`: the watch is running, from a revision
   ``H`` read when it started, so every change after ``H`` will be delivered);
2. it reads its prefixes at a revision ``R`` (``R >= H``: the read comes after the watch's start);
   meanwhile the events routed to it are held (at most ``MAX_PENDING`` events and
   ``MAX_PENDING_BYTES`` of values: beyond, its term ends);
3. :meth:`Subscription.start` with ``R``: the held events and every later one are handed over when
   their revision is above ``R`` (what is at or below ``R`` is in the read already).

So a shard leader that starts while another shard's leader on the node has followed the prefix
for an hour sees exactly what a watch of its own from ``R`` would have shown. A broken stream
resumes (or re-reads after a compaction) as ``cluster.watch.follow`` does for any cache; the keys
the re-read hands over as deletions are every subscriber's known keys. An error a subscriber's
handler raises ends that subscriber only (its :meth:`Subscription.run` raises it, ending its
term, as an error in a watch of its own did); an error that ends the shared watch ends every
subscriber's term.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from cluster.errors import CronmeshError, Unavailable
from cluster.etcd import Etcd, Event
from cluster.shards import Shard, job_hash
from cluster.watch import Handler, KnownKeys, follow
from nodes.leader.sharedload import SharedLoad

log = structlog.get_logger(__name__)

MAX_PENDING = 200_000  # events held for one subscriber while it reads; beyond, its term ends
MAX_PENDING_BYTES = 64 << 20  # and their values' bytes (a job event carries its document)


class FeedOverflow(CronmeshError):
    """A subscriber read for so long that more than ``MAX_PENDING`` events were held for it."""

    code = "feed_overflow"


class Subscription:
    """One shard leader's view of one shared watch."""

    def __init__(
        self, stream: _Stream, shard: Shard, every: bool, handle: Handler, known: KnownKeys
    ) -> None:
        self.stream = stream
        self.shard = shard
        self.every = every  # every job's events, not only the shard's own (shard 0's cache)
        self.handle = handle
        self.known = known
        self.since: int | None = None  # None: still reading; events are held
        self.pending: list[Event] = []
        self.pending_bytes = 0
        self.error: BaseException | None = None
        self._ended = asyncio.Event()

    def deliver(self, ev: Event) -> None:
        if self.error is not None:
            return
        if self.since is None:
            self.pending_bytes += len(ev.kv.value)
            if len(self.pending) >= MAX_PENDING or self.pending_bytes > MAX_PENDING_BYTES:
                held = f"{MAX_PENDING} events or {MAX_PENDING_BYTES} bytes"
                self.fail(FeedOverflow(f"more than {held} held during a read"))
                return
            self.pending.append(ev)
            return
        if ev.kv.mod_revision > self.since:
            try:
                self.handle(ev)
            except Exception as exc:  # this subscriber's term ends; the others go on
                self.fail(exc)

    def start(self, rev: int) -> None:
        """Hand over what is newer than ``rev`` (the subscriber's read), held and to come."""
        self.since = rev
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        for ev in pending:
            self.deliver(ev)

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
            self.pending, self.pending_bytes = [], 0
            self._ended.set()

    async def run(self, rev: int) -> None:
        """Start at ``rev`` and follow until cancelled; raises what ended the subscription."""
        self.start(rev)
        await self._ended.wait()
        assert self.error is not None
        raise self.error

    def close(self) -> None:
        """Leave the shared watch (idempotent): the last subscriber to leave stops it."""
        self.stream.remove(self)


class _Start:
    """One start of a shared watch: ``done`` once it follows (or could not start: ``error``)."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.error: BaseException | None = None


class _Stream:
    """The shared watch of one prefix and its subscribers."""

    def __init__(self, etcd: Etcd, prefix: str) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.subs: list[Subscription] = []
        # the subscribers by what they keep (D482): every job, or one shard's (count -> index)
        self.every: list[Subscription] = []
        self.by_shard: dict[int, dict[int, list[Subscription]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.start: _Start | None = None  # the running watch's start
        self.stopping: set[asyncio.Task[None]] = set()  # cancelled, not yet ended

    def dispatch(self, ev: Event) -> None:
        """Hand ``ev`` to the subscribers that keep its job: those that keep every job, and
        the one(s) of the job's shard, found by one look-up (D482) — a subscriber of another
        shard is not visited, and the job's hash is computed once per job, not per event."""
        parts = ev.kv.key[len(self.prefix) :].split("/", 2)
        if len(parts) < 2:
            return  # not a job's key: nobody keeps it
        for sub in self.every:
            sub.deliver(ev)
        if self.by_shard:  # only when a subscriber owns part of the jobs (K > 1)
            h = job_hash(parts[0], parts[1])
            for count, of_count in self.by_shard.items():
                for sub in of_count.get(h % count, ()):
                    sub.deliver(ev)

    def add(self, sub: Subscription) -> None:
        self.subs.append(sub)
        self._route()

    def _route(self) -> None:
        """The routing table of :meth:`dispatch`, rebuilt when a subscriber joins or leaves
        (copies: a delivery that ends a subscription never changes the lists being walked)."""
        self.every = [s for s in self.subs if s.every or s.shard.count == 1]
        by_shard: dict[int, dict[int, list[Subscription]]] = {}
        for s in self.subs:
            if not (s.every or s.shard.count == 1):
                by_shard.setdefault(s.shard.count, {}).setdefault(s.shard.index, []).append(s)
        self.by_shard = by_shard

    def known(self) -> set[str]:
        out: set[str] = set()
        for sub in self.subs:
            if sub.error is None:
                out |= sub.known()
        return out

    async def started(self) -> None:
        """The watch runs (started now if it did not); raises if it could not start."""
        if self.task is None:
            self.start = _Start()
            self.task = asyncio.create_task(self._run(self.start))
        start = self.start
        assert start is not None
        await start.done.wait()
        if start.error is not None:
            raise start.error

    async def _run(self, start: _Start) -> None:
        try:
            # the revision to watch from: every subscriber reads after this, at or above it
            res = await self.etcd.range(self.prefix, prefix=False)
            start.done.set()
            await follow(
                self.etcd, self.prefix, res.revision, self.dispatch, self.known, what="shared watch"
            )
            raise Unavailable(f"shared watch of {self.prefix} ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("shared watch ended", prefix=self.prefix, error=str(exc))
            if not start.done.is_set():
                start.error = exc
                start.done.set()
            if self.start is start:
                self.task, self.start = None, None
            for sub in list(self.subs):  # an error of its own for each subscriber's term
                sub.fail(Unavailable(f"shared watch of {self.prefix} ended: {exc!r}"))

    def remove(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self.subs.remove(sub)
        self._route()
        if not self.subs and self.task is not None:
            self.task.cancel()
            self.stopping.add(self.task)
            self.task.add_done_callback(self.stopping.discard)
            self.task, self.start = None, None


class Feed:
    """The shared watches of one node (one per prefix), for the shard leaders it runs."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self._streams: dict[str, _Stream] = {}
        self.loads = SharedLoad(etcd)  # one read of the jobs for shards won together (D432)

    async def subscribe(
        self,
        prefix: str,
        shard: Shard,
        handle: Callable[[Event], None],
        known: KnownKeys,
        *,
        every: bool = False,
    ) -> Subscription:
        """Join the shared watch of ``prefix`` (started if none runs): the events of ``shard``'s
        jobs (``every``: of every job) are held until :meth:`Subscription.start`. Read what the
        subscription caches AFTER this returns."""
        stream = self._streams.get(prefix)
        if stream is None:
            stream = self._streams[prefix] = _Stream(self.etcd, prefix)
        sub = Subscription(stream, shard, every, handle, known)
        stream.add(sub)
        try:
            await stream.started()
        except BaseException:
            sub.close()
            raise
        return sub

    def watching(self) -> list[str]:
        """The prefixes a shared watch follows now."""
        return sorted(p for p, s in self._streams.items() if s.task is not None)

    async def aclose(self) -> None:
        """Wait for the watches the last subscribers stopped (shutdown: no task left behind)."""
        await self.loads.aclose()
        tasks = [t for s in self._streams.values() for t in (*s.stopping, s.task) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def subscribers(self, prefix: str) -> int:
        stream = self._streams.get(prefix)
        return len(stream.subs) if stream is not None else 0
