"""The audit log: who changed what, when, with the values before and after (``audit/<id>``).

Changes are captured centrally: while a request is being served, the HTTP layer sets a ``Changes``
collector in ``cluster.etcd.OBSERVER`` (a context variable); ``cluster.etcd`` then asks etcd for
the previous value of every key a put or delete touches and reports before/after. So any route,
also one added later by another module, is audited without code of its own. Entries are bounded
by count and by age (``prune``); ids are snowflakes, so the prefix reads oldest first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cluster.etcd import OBSERVER, Etcd, Op
from cluster.ids import Snowflake, id_floor
from cluster.keys import Keys

MAX_VALUE = 4096  # bytes of a before/after value kept in an entry
MAX_CHANGES = 50  # keys listed per entry
SECRET_FIELDS = frozenset({"password", "password_hash", "digest", "token", "csrf", "secret"})


@dataclass
class Changes:
    """The keys one request changed, in order, with their values before and after."""

    items: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    closed: bool = False

    def add(self, key: str, before: bytes | None, after: bytes | None) -> None:
        if len(self.items) >= MAX_CHANGES:
            self.dropped += 1
            return
        self.items.append({"key": key, "before": _value(before), "after": _value(after)})


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: ("<redacted>" if k in SECRET_FIELDS and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _value(raw: bytes | None) -> Any:
    if raw is None:
        return None
    if len(raw) > MAX_VALUE:
        return {"truncated": True, "bytes": len(raw)}
    try:
        return redact(json.loads(raw))
    except ValueError:
        return raw.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Retention:
    max_entries: int = 100_000
    max_age: timedelta = timedelta(days=90)
    every: int = 64  # prune after this many writes of one node


class AuditLog:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        ids: Snowflake,
        clock: Callable[[], datetime],
        retention: Retention = Retention(),
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.ids = ids
        self.clock = clock
        self.retention = retention
        self._writes = 0

    async def record(self, entry: dict[str, Any]) -> str:
        entry_id = self.ids.next()
        doc = {"id": entry_id, "at": self.clock().isoformat(), **redact(entry)}
        token = OBSERVER.set(None)  # the audit write itself is not a change to audit
        try:
            await self.etcd.put(self.keys.audit(entry_id), json.dumps(doc, default=str))
            self._writes += 1
            if self._writes % self.retention.every == 0:
                await self.prune()
        finally:
            OBSERVER.reset(token)
        return entry_id

    async def prune(self) -> int:
        """Drop entries older than ``max_age`` and the oldest beyond ``max_entries``."""
        base = self.keys.audits()
        floor = id_floor(self.clock() - self.retention.max_age)
        removed = await self._delete_range(base, base + floor)
        count = (await self.etcd.range(base, count_only=True)).count
        excess = count - self.retention.max_entries
        if excess > 0:
            oldest = await self.etcd.range(base, limit=excess, keys_only=True)
            if oldest.kvs:
                removed += await self._delete_range(base, oldest.kvs[-1].key + "\0")
        return removed

    async def _delete_range(self, start: str, end: str) -> int:
        res = await self.etcd.txn([], [Op.delete_range(start, end)])
        return int(res.responses[0].response_delete_range.deleted)

    async def list(
        self, *, limit: int = 100, before: str | None = None, actor: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; ``before`` pages by id."""
        base = self.keys.audits()
        end = base + before if before else None
        out: list[dict[str, Any]] = []
        while len(out) < limit:
            page = await self.etcd.range(base, end=end, limit=200, descending=True)
            for kv in page.kvs:
                doc = json.loads(kv.value)
                if actor is None or doc.get("actor") == actor:
                    out.append(doc)
            if not page.more or not page.kvs:
                break
            end = page.kvs[-1].key
        return out[:limit]
