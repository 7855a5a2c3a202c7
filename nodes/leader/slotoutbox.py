"""The slot outbox (D232): the notifications a slot's outcome puts into ``slot-outbox/`` in the
transaction that settles it, delivered through the notifier's rules, then deleted in a write
fenced on leadership. A delivery cut by a leader change is sent again by the next leader, with
the same delivery id (at-least-once, as for runs). The outbox part of the leader's slot watcher
(``nodes.leader.deadlines``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from cluster.errors import LostOwnership
from cluster.etcd import Etcd, Op
from cluster.keys import Keys
from nodes.leader.retention import delete_fenced

if TYPE_CHECKING:
    from cluster.election import Leadership

log = structlog.get_logger("nodes.leader.deadlines")

OUTBOX_PAGE = 100


class SlotNotifier(Protocol):
    """What the watcher needs of the notifier (``nodes.leader.notifier.Notifier``)."""

    @property
    def ready(self) -> bool: ...

    async def deliver_slot(
        self, project: str, job: str, event: str, doc: dict[str, Any], delivery: str
    ) -> None: ...


class SlotOutbox:
    """Delivers what is in the outbox whenever it is woken (``wake``), a page at a time."""

    def __init__(self, etcd: Etcd, keys: Keys, leadership: Leadership) -> None:
        self.etcd = etcd
        self.keys = keys
        self.lead = leadership
        self.notifier: SlotNotifier | None = None  # set by the term's notifier
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Entries were written (or may be there): deliver them."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver the slot notifications written with outcomes, then delete them (fenced). A
        delivery cut by a leader change is sent again by the next leader, with the same
        delivery id (at-least-once, as for runs)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self._page():
                    pass
            except LostOwnership:
                raise
            except Exception as exc:
                log.warning("slot notifications not sent; retrying", error=repr(exc))
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _page(self) -> bool:
        notifier = self.notifier
        if notifier is None:
            return False  # no notifier this term: the entries wait for a leader that has one
        if not notifier.ready:
            await asyncio.sleep(0.2)  # the notifier is still starting
            self._wake.set()
            return False
        res = await self.etcd.range(self.keys.slot_outbox(), limit=OUTBOX_PAGE)
        if not res.kvs:
            return False
        started = time.monotonic()

        async def one(kv: Any) -> None:
            try:
                entry = json.loads(kv.value)
                doc = entry["doc"]
            except (ValueError, KeyError):  # written by hand or a newer version: dropped
                log.error("unreadable slot notification dropped", key=kv.key)
                return
            with contextlib.suppress(LookupError):
                await notifier.deliver_slot(
                    doc["project"], doc["job"], entry["event"], doc, entry["delivery"]
                )

        # each delivery ends (sent, refused or given up after its retries), then all go at once
        await asyncio.gather(*(one(kv) for kv in res.kvs))
        await delete_fenced(self.etcd, self.lead, [Op.delete(kv.key) for kv in res.kvs])
        log.debug("slot notifications sent", count=len(res.kvs), seconds=time.monotonic() - started)
        return len(res.kvs) == OUTBOX_PAGE
