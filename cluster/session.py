"""A node's lease: granted once, kept alive at TTL/3, and declared lost before etcd expires it.

Everything a node owns (its registration, claims, slots, election candidacy) is bound to this one
lease, so it all vanishes together when the node dies. ``lost`` is set as soon as the node can no
longer prove the lease is alive: when etcd says it is gone, or when no refresh succeeded for
almost a whole TTL (the local deadline runs from the moment the last successful refresh was *sent*,
so the node gives up before etcd can expire the lease and hand its work to someone else).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from cluster.errors import Unavailable
from cluster.etcd import Etcd

log = structlog.get_logger(__name__)


class Session:
    def __init__(
        self,
        etcd: Etcd,
        lease_id: int,
        ttl: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        granted_at: float | None = None,
    ) -> None:
        self.etcd = etcd
        self.lease_id = lease_id
        self.ttl = ttl
        self.lost = asyncio.Event()
        self._clock = clock
        self._expires = (granted_at if granted_at is not None else clock()) + ttl
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls, etcd: Etcd, ttl: int, *, clock: Callable[[], float] = time.monotonic
    ) -> Session:
        sent = clock()
        lease_id = await etcd.grant(ttl)
        session = cls(etcd, lease_id, ttl, clock=clock, granted_at=sent)
        session._task = asyncio.create_task(session._keepalive(), name=f"lease-{lease_id:x}")
        return session

    @property
    def margin(self) -> float:
        """Safety margin: the node considers the lease lost this long before etcd would."""
        return min(1.0, self.ttl * 0.2)

    @property
    def attempt_deadline(self) -> float:
        """How long one refresh may take before it is tried on another etcd member."""
        return min(2.0, max(0.5, self.ttl / 5))

    def remaining(self) -> float:
        return self._expires - self._clock()

    def _mark_lost(self, why: str) -> None:
        if not self.lost.is_set():
            log.warning("lease lost", lease=f"{self.lease_id:x}", why=why)
            self.lost.set()

    async def _keepalive(self) -> None:
        interval = self.ttl / 3
        while not self._closed:
            await asyncio.sleep(interval if self.remaining() > interval + self.margin else 0.2)
            sent = self._clock()
            if self.remaining() <= self.margin:
                self._mark_lost("no successful refresh within the lease TTL")
                return
            # one attempt gets a fraction of the TTL: a member that does not answer by then is
            # left (the client moves on) while the lease can still be refreshed on another one
            deadline = max(0.2, min(self.attempt_deadline, self.remaining() - self.margin))
            try:
                ttl = await asyncio.wait_for(
                    self.etcd.keepalive(self.lease_id, deadline=deadline), deadline + 1.0
                )
            except (Unavailable, TimeoutError) as exc:
                log.info("lease refresh failed", lease=f"{self.lease_id:x}", error=str(exc))
                continue
            if ttl <= 0:
                self._mark_lost("etcd reports the lease expired")
                return
            self._expires = sent + ttl

    async def close(self) -> None:
        """Stop refreshing and revoke the lease (bounded by the TTL); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.lost.is_set():
            try:
                await self.etcd.revoke(self.lease_id, deadline=float(self.ttl))
            except Unavailable as exc:
                log.info("lease revoke failed; it will expire", error=str(exc))
        self.lost.set()
