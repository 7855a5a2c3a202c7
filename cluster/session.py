"""A node's lease: granted once, kept alive at TTL/3, and declared lost before etcd expires it.

Everything a node owns (its registration, claims, slots, election candidacy) is bound to this one
lease, so it all vanishes together when the node dies. ``lost`` is set as soon as the node can no
longer prove the lease is alive: when etcd says it is gone, or when no refresh succeeded for
almost a whole TTL (the local deadline runs from the moment the last successful refresh was *sent*,
so the node gives up before etcd can expire the lease and hand its work to someone else).

The refreshes run in a thread of their own, over a blocking gRPC channel (``BlockingLease``):
an event loop saturated by work (a burst of thousands of runs) delays everything on it, and a
lease refresh that waits its turn behind that work would expire the lease of a node that is
merely busy, killing every process it runs. The thread refreshes only while the event loop
shows signs of life (a heartbeat task at least once per TTL), so a wedged loop still loses its
lease.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable

import structlog

from cluster.errors import Unavailable
from cluster.etcd import AuthExpired, BlockingLease, Etcd

log = structlog.get_logger(__name__)

STALL_SAMPLES = 8  # earlier places a stalled loop was seen at, kept for its warning (D381)


def stack_of(thread_id: int | None, depth: int = 12) -> list[str]:
    """The innermost ``depth`` frames a thread is executing (``file:line function``), for the
    log line of a stalled event loop: what held it (D381)."""
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    if frame is None:
        return []
    return [
        f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
        for f in traceback.extract_stack(frame)[-depth:]
    ]


class Session:
    def __init__(
        self,
        etcd: Etcd,
        lease_id: int,
        ttl: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        granted_at: float | None = None,
        on_valid: Callable[[float], None] | None = None,
    ) -> None:
        self.etcd = etcd
        self.lease_id = lease_id
        self.ttl = ttl
        self.lost = asyncio.Event()
        self._clock = clock
        self._expires = (granted_at if granted_at is not None else clock()) + ttl
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._beat_at = clock()
        self._loop_thread: int | None = None  # the event loop's thread (where a stall is)
        # where the loop was at the refreshes since it fell > 1 s behind (innermost frames)
        self._samples: collections.deque[str] = collections.deque(maxlen=STALL_SAMPLES)
        # Told, from the refresh thread, until when the lease is surely alive (the fence kills
        # the node's runs at that instant unless told a later one: D152).
        self._on_valid = on_valid

    @classmethod
    async def open(
        cls,
        etcd: Etcd,
        ttl: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_valid: Callable[[float], None] | None = None,
    ) -> Session:
        sent = clock()
        lease_id = await etcd.grant(ttl)
        session = cls(etcd, lease_id, ttl, clock=clock, granted_at=sent, on_valid=on_valid)
        session._tell_valid()
        name = f"lease-{lease_id:x}"
        session._loop = asyncio.get_running_loop()
        session._loop_thread = threading.get_ident()
        session._task = asyncio.create_task(session._heartbeat(), name=name)
        session._thread = threading.Thread(target=session._keep_in_thread, name=name)
        session._thread.daemon = True
        session._thread.start()
        return session

    @property
    def margin(self) -> float:
        """Safety margin: the node considers the lease lost this long before etcd would."""
        return min(1.0, self.ttl * 0.2)

    @property
    def attempt_deadline(self) -> float:
        """How long one refresh may take before it is tried on another etcd member. With a
        single member there is no other one: an attempt may use the whole time left."""
        if len(self.etcd.endpoints) == 1:
            return float(self.ttl)
        return min(2.0, max(0.5, self.ttl / 5))

    @property
    def valid_until(self) -> float:
        """The clock instant until which the lease is surely alive: the last refresh's send time
        plus the TTL, minus :attr:`margin`. etcd counts the TTL from when it *received* that
        refresh, later than it was sent, so the lease cannot expire before this instant."""
        return self._expires - self.margin

    def _tell_valid(self) -> None:
        if self._on_valid is not None:
            try:
                self._on_valid(self.valid_until)
            except Exception:
                log.exception("lease deadline not passed on")

    def remaining(self) -> float:
        return self._expires - self._clock()

    def _mark_lost(self, why: str) -> None:
        if not self.lost.is_set():
            log.warning("lease lost", lease=f"{self.lease_id:x}", why=why)
            self.lost.set()

    def _wait_s(self) -> float:
        """Until the next refresh: a third of the TTL, or soon when the last one failed."""
        interval = self.ttl / 3
        return interval if self.remaining() > interval + self.margin else 0.2

    def _attempt_s(self) -> float:
        """The deadline of the refresh about to be sent: a fraction of the TTL, so a member
        that does not answer by then is left while the lease can still be refreshed on
        another one, and never past the local expiry margin."""
        return max(0.2, min(self.attempt_deadline, self.remaining() - self.margin))

    async def _heartbeat(self) -> None:
        """Proof for the refresh thread that this event loop still runs."""
        while True:
            self._beat_at = self._clock()
            await asyncio.sleep(min(0.25, self.ttl / 10))

    def _lost_from_thread(self, why: str) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                self._loop.call_soon_threadsafe(self._mark_lost, why)

    def _keep_in_thread(self) -> None:
        lease = BlockingLease(self.etcd)
        try:
            self._refresh_until_closed(lease)
        finally:
            lease.close()

    def _refresh_until_closed(self, lease: BlockingLease) -> None:
        while not self._closed:
            if self._stop.wait(self._wait_s()):
                return
            sent = self._clock()
            if self.remaining() <= self.margin:
                self._lost_from_thread("no successful refresh within the lease TTL")
                return
            stalled = sent - self._beat_at
            if stalled > 1.0:  # late: where the loop is, at each refresh while it stays late
                self._samples.append(" < ".join(reversed(stack_of(self._loop_thread, 3))))
            else:
                self._samples.clear()
            if stalled > self.ttl:
                log.warning(
                    "event loop stalled; lease not refreshed",
                    lease=f"{self.lease_id:x}",
                    stalled_s=round(stalled, 1),
                    where=stack_of(self._loop_thread),
                    earlier=list(self._samples)[:-1],
                )
                continue
            deadline = self._attempt_s()
            try:
                try:
                    ttl = lease.keepalive(self.lease_id, deadline)
                except AuthExpired:  # the event loop's client renews the token
                    ttl = self._keepalive_on_loop(deadline)
            except (Unavailable, TimeoutError) as exc:
                log.info("lease refresh failed", lease=f"{self.lease_id:x}", error=str(exc))
                continue
            if ttl <= 0:
                self._lost_from_thread("etcd reports the lease expired")
                return
            self._expires = sent + ttl
            self._tell_valid()

    def _keepalive_on_loop(self, deadline: float) -> int:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(
            self.etcd.keepalive(self.lease_id, deadline=deadline), self._loop
        )
        try:
            return future.result(deadline + 1.0)
        except TimeoutError:
            future.cancel()
            raise

    async def close(self) -> None:
        """Stop refreshing and revoke the lease (bounded by the TTL); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self.ttl + 2.0)
        if self._task is not None:
            self._task.cancel()
            # gather, not suppress(CancelledError): a cancel of close() itself must go on (D420)
            await asyncio.gather(self._task, return_exceptions=True)
        if not self.lost.is_set():
            try:
                await self.etcd.revoke(self.lease_id, deadline=float(self.ttl))
            except Unavailable as exc:
                log.info("lease revoke failed; it will expire", error=str(exc))
        self.lost.set()
