"""The audit log: who changed what, when, with the values before and after (``audit/<id>``).

Changes are captured centrally: while a request is being served, the HTTP layer sets a ``Changes``
collector in ``cluster.etcd.OBSERVER`` (a context variable); ``cluster.etcd`` then asks etcd for
the previous value of every key a put or delete touches and reports before/after. So any route,
also one added later by another module, is audited without code of its own. Entries are bounded
by count and by age (``prune``); ids are snowflakes, so the prefix reads oldest first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cluster.etcd import OBSERVER, Etcd, Op
from cluster.ids import Snowflake, id_floor
from cluster.keys import Keys

MAX_VALUE = 4096  # bytes of a before/after value kept in an entry
MAX_CHANGES = 50  # keys listed per entry
# ``ciphertext``/``nonce``: a sealed project secret (secrets/…) is redacted too, so an audit
# reader never holds even the encrypted value (D147).
SECRET_FIELDS = frozenset(
    {"password", "password_hash", "digest", "token", "csrf", "secret", "ciphertext", "nonce"}
)


@dataclass
class Changes:
    """The keys one request changed, in order, with their values before and after.

    With a ``draft`` (the entry's key and its fields known when the request starts), every write
    the request makes carries the entry along in its own transaction (``journal``): a node that
    dies right after a change leaves an entry marked ``incomplete`` listing the keys written and
    their new values, instead of no entry at all. The full entry overwrites it when the request
    ends.
    """

    items: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    closed: bool = False
    draft: tuple[str, dict[str, Any]] | None = None

    def add(self, key: str, before: bytes | None, after: bytes | None) -> None:
        if len(self.items) >= MAX_CHANGES:
            self.dropped += 1
            return
        self.items.append({"key": key, "before": _value(before), "after": _value(after)})

    def journal(self, ops: list[Any]) -> Any | None:
        """The put of the draft entry to add to a transaction running ``ops``, if any."""
        if self.draft is None:
            return None
        key, fields = self.draft
        pending = list(_writes(ops))
        if not pending:
            return None
        doc = {
            **fields,
            "outcome": "incomplete",
            "changes": (self.items + pending)[:MAX_CHANGES],
            "changes_dropped": self.dropped + max(0, len(self.items) + len(pending) - MAX_CHANGES),
        }
        return Op.put(key, json.dumps(doc, default=str))


def _writes(ops: list[Any]) -> Iterator[dict[str, Any]]:
    """What ``ops`` will write, as draft change items (the values before are not known yet)."""
    for op in ops:
        if op.HasField("request_put"):
            put = op.request_put
            yield {"key": put.key.decode(), "after": _value(bytes(put.value))}
        elif op.HasField("request_delete_range"):
            rng = op.request_delete_range
            item = {"key": rng.key.decode(), "after": None}
            if rng.range_end:
                item["range_end"] = rng.range_end.decode("utf-8", "replace")
            yield item
        elif op.HasField("request_txn"):
            yield from _writes(list(op.request_txn.success))


def _is_reference(item: Any) -> bool:
    """``{"secret": NAME}`` in a job's or task's ``env``: a secret's name, not a secret."""
    return isinstance(item, dict) and list(item) == ["secret"] and isinstance(item["secret"], str)


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact_field(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _redact_field(key: str, value: Any) -> Any:
    if key in SECRET_FIELDS and value is not None:
        return "<redacted>"
    if key == "env" and isinstance(value, dict):
        return {n: i if _is_reference(i) else redact(i) for n, i in value.items()}
    return redact(value)


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

    def draft(self, entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """An entry's key and fields, fixed when its request starts (``Changes.draft``)."""
        entry_id = self.ids.next()
        doc = {"id": entry_id, "at": self.clock().isoformat(), **redact(entry)}
        return self.keys.audit(entry_id), doc

    async def record(
        self, entry: dict[str, Any], draft: tuple[str, dict[str, Any]] | None = None
    ) -> str:
        """Write an entry; with the ``draft`` its request began with, complete that one."""
        entry_id = draft[1]["id"] if draft else self.ids.next()
        at = draft[1]["at"] if draft else self.clock().isoformat()
        doc = {"id": entry_id, "at": at, **redact(entry)}
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
