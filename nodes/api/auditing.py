"""What the access layer writes to the audit log: the changes of a write request, and refused
requests merged into bursts (D168). The auditing part of :class:`~nodes.api.access.Access`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from cluster.audit import AuditLog, Burst, Changes, DenialMerger

log = structlog.get_logger("nodes.api.access")


class Auditing:
    """The auditing part of ``Access`` (its state is the access object's)."""

    audit: AuditLog | None
    denials: DenialMerger
    _flush_timer: asyncio.TimerHandle | None
    _flushes: set[asyncio.Task[None]]

    def changes(self, entry: dict[str, Any]) -> Changes:
        """The collector of one write request, journaling its entry into each change it makes."""
        return Changes(draft=self.audit.draft(entry) if self.audit is not None else None)

    async def record_denial(self, entry: dict[str, Any], source: str) -> None:
        """Audit a refused request or failed password check: the first of its kind in a window
        gets an entry (in the denials' own budget), repeats only raise its ``count``."""
        now = time.monotonic()
        key = tuple(str(entry.get(f)) for f in ("outcome", "actor", "method", "path", "address"))
        burst = self.denials.admit(key, source, entry, now)
        if burst is None:
            return
        if self.audit is None:
            return
        try:
            burst.at = self.audit.clock().isoformat()
            burst.entry_id = await self.audit.record(burst.doc, at=burst.at)
        except Exception as exc:
            log.error("audit write failed", error=repr(exc), entry=entry.get("path"))
        self._arm_flush()

    def _arm_flush(self) -> None:
        if self._flush_timer is None and self.denials.open:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(self.denials.window, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_timer = None
        task = asyncio.get_running_loop().create_task(self.flush_denials(time.monotonic()))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush_denials(self, now: float) -> None:
        """Rewrite the entries of bursts whose window ended with their final count."""
        for burst in self.denials.due(now):
            await self._rewrite(burst)
        if self.denials.dropped:
            log.warning(
                "refused requests not audited: too many at once", count=self.denials.dropped
            )
            self.denials.dropped = 0
        self._arm_flush()

    async def _rewrite(self, burst: Burst) -> None:
        if self.audit is None or burst.entry_id is None:
            return
        try:
            await self.audit.record(
                {**burst.doc, "count": burst.count}, entry_id=burst.entry_id, at=burst.at
            )
            burst.written = burst.count
        except Exception as exc:
            log.error("audit write failed", error=repr(exc), entry=burst.doc.get("path"))

    async def close(self) -> None:
        """The node stops: write the final counts of open bursts."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for task in list(self._flushes):
            task.cancel()
        for burst in self.denials.due(float("inf")):
            await self._rewrite(burst)

    async def record(self, entry: dict[str, Any], changes: Changes | None = None) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.record(entry, changes.draft if changes is not None else None)
        except Exception as exc:  # an audit write must not turn a done change into an error
            log.error("audit write failed", error=repr(exc), entry=entry.get("path"))
