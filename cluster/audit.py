"""The audit log: who changed what, when, with the values before and after (``audit/<id>``).

Changes are captured centrally: while a request is being served, the HTTP layer sets a ``Changes``
collector in ``cluster.etcd.OBSERVER`` (a context variable); ``cluster.etcd`` then asks etcd for
the previous value of every key a put or delete touches and reports before/after. So any route,
also one added later by another module, is audited without code of its own. Entries are bounded
by count and by age (``prune``); ids are snowflakes, so the prefix reads oldest first.

Refused requests and failed password checks go to a prefix of their own with its own budget, and
repeats are merged (``DenialMerger``), so nobody can wipe the history of changes by being
refused often. ``export`` copies entries to the log store as append-only objects (D168).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from cluster.etcd import OBSERVER, Compare, Etcd, Op
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


# Refused requests and failed password checks cost an attacker nothing, so they get a budget of
# their own (``audit-denied/``): however many they make, they never push changes out (D168).
DENIED_OUTCOMES = frozenset({"denied", "login_failed", "password_check_failed", "hook_refused"})
DENIED_RETENTION = Retention(max_entries=20_000, max_age=timedelta(days=30))
# A user's logins and changes to their own credentials (log out, own tokens, own password) cost
# any user, a viewer too, nothing but a request: a loop creating and revoking one's own API token
# wrote ~270 entries/s and pushed 90 days of changes out in minutes. They get a budget of their
# own too (``audit-own/``), so they never push changes out (D202).
OWN_RETENTION = Retention(max_entries=20_000, max_age=timedelta(days=30))
OWN_CREDENTIALS = ("tokens", "password")
EXPORT_BATCH = 5_000  # entries per exported object
EXPORT_SETTLE = timedelta(minutes=2)  # younger entries may still change (drafts, merged counts)
Kind = Literal["changes", "denied", "own"]
KINDS: tuple[Kind, ...] = ("changes", "denied", "own")


def kind_of(entry: dict[str, Any]) -> Kind:
    if entry.get("outcome") in DENIED_OUTCOMES:
        return "denied"
    return "own" if is_own_credentials(entry) else "changes"


def is_own_credentials(entry: dict[str, Any]) -> bool:
    """Is the entry a login, a logout, or the actor changing their own tokens or password?
    (An admin changing someone else's is a change like any other.)"""
    if entry.get("outcome") == "login":
        return True
    actor, path = entry.get("actor"), entry.get("path")
    if not isinstance(actor, str) or not actor or not isinstance(path, str):
        return False
    if path.rstrip("/") == "/api/v1/auth/logout":
        return True
    own = f"/api/v1/users/{actor}/"
    return path.startswith(own) and path[len(own) :].split("/", 1)[0] in OWN_CREDENTIALS


def export_key(first: str, last: str) -> str:
    """The log-store object of exported entries ``first``..``last`` (ids; never rewritten)."""
    return f"_audit/{first}-{last}.jsonl"


@dataclass
class Burst:
    """Repeats of one refused request within a window, written as one entry with a count."""

    key: tuple[str, ...]
    source: str
    doc: dict[str, Any]
    opened: float
    count: int = 1
    written: int = 1  # the count the stored entry has
    entry_id: str | None = None
    at: str | None = None


@dataclass
class DenialMerger:
    """Which refused requests get an entry of their own (pure; every call takes ``now``).

    The first of a kind (same outcome, actor, method, path, address) in ``window`` seconds is
    written; repeats only count, and the entry is rewritten with the count when the window ends.
    One source (the actor; for failed logins, the address) opens at most ``per_source`` bursts
    per window, the rest fold into one overflow burst of that source; at most ``max_open`` bursts
    are open at all (beyond that, refusals are only counted in ``dropped``).
    """

    window: float = 60.0
    per_source: int = 20
    max_open: int = 10_000
    open: dict[tuple[str, ...], Burst] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    dropped: int = 0

    def admit(
        self, key: tuple[str, ...], source: str, doc: dict[str, Any], now: float
    ) -> Burst | None:
        """The new burst to write, or None when this refusal was merged into an open one."""
        burst = self.open.get(key)
        if burst is None and self.by_source.get(source, 0) >= self.per_source:
            key = ("overflow", source)
            burst = self.open.get(key)
            doc = {**doc, "path": "(several)", "method": "(several)", "overflow": True}
        if burst is not None:
            burst.count += 1
            return None
        if len(self.open) >= self.max_open:
            self.dropped += 1
            return None
        burst = Burst(key, source, doc, now)
        self.open[key] = burst
        self.by_source[source] = self.by_source.get(source, 0) + 1
        return burst

    def due(self, now: float) -> list[Burst]:
        """Close the bursts whose window ended; those whose count grew need a rewrite."""
        ended = [b for b in self.open.values() if now - b.opened >= self.window]
        for burst in ended:
            del self.open[burst.key]
            left = self.by_source.get(burst.source, 1) - 1
            if left > 0:
                self.by_source[burst.source] = left
            else:
                self.by_source.pop(burst.source, None)
        return [b for b in ended if b.count > b.written and b.entry_id is not None]


class AuditLog:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        ids: Snowflake,
        clock: Callable[[], datetime],
        retention: Retention = Retention(),
        denied_retention: Retention = DENIED_RETENTION,
        own_retention: Retention = OWN_RETENTION,
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.ids = ids
        self.clock = clock
        self.retention = {"changes": retention, "denied": denied_retention, "own": own_retention}
        self.settle = EXPORT_SETTLE
        self._writes = {"changes": 0, "denied": 0, "own": 0}

    def _base(self, kind: Kind) -> str:
        if kind == "denied":
            return self.keys.audits_denied()
        return self.keys.audits_own() if kind == "own" else self.keys.audits()

    def draft(self, entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """An entry's key and fields, fixed when its request starts (``Changes.draft``); under
        the prefix of its kind (the method, path and actor decide it, D202)."""
        entry_id = self.ids.next()
        doc = {"id": entry_id, "at": self.clock().isoformat(), **redact(entry)}
        return self._base(kind_of(entry)) + entry_id, doc

    async def record(
        self,
        entry: dict[str, Any],
        draft: tuple[str, dict[str, Any]] | None = None,
        *,
        entry_id: str | None = None,
        at: str | None = None,
    ) -> str:
        """Write an entry; with the ``draft`` its request began with, complete that one; with an
        ``entry_id`` (and its ``at``), rewrite that entry."""
        if draft:
            entry_id, at = draft[1]["id"], draft[1]["at"]
        entry_id = entry_id or self.ids.next()
        at = at or self.clock().isoformat()
        kind = kind_of(entry)
        doc = {"id": entry_id, "at": at, **redact(entry)}
        token = OBSERVER.set(None)  # the audit write itself is not a change to audit
        try:
            await self.etcd.put(self._base(kind) + entry_id, json.dumps(doc, default=str))
            self._writes[kind] += 1
            if self._writes[kind] % self.retention[kind].every == 0:
                await self.prune(kind)
        finally:
            OBSERVER.reset(token)
        return entry_id

    async def prune(self, kind: Kind = "changes") -> int:
        """Drop entries older than ``max_age`` and the oldest beyond ``max_entries``."""
        base, retention = self._base(kind), self.retention[kind]
        floor = id_floor(self.clock() - retention.max_age)
        removed = await self._delete_range(base, base + floor)
        count = (await self.etcd.range(base, count_only=True)).count
        excess = count - retention.max_entries
        if excess > 0:
            oldest = await self.etcd.range(base, limit=excess, keys_only=True)
            if oldest.kvs:
                removed += await self._delete_range(base, oldest.kvs[-1].key + "\0")
        return removed

    async def _delete_range(self, start: str, end: str) -> int:
        res = await self.etcd.txn([], [Op.delete_range(start, end)])
        return int(res.responses[0].response_delete_range.deleted)

    async def _list(
        self, base: str, limit: int, before: str | None, actor: str | None
    ) -> list[dict[str, Any]]:
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

    async def since(self, base: str, after: str, upto: str, limit: int) -> list[dict[str, Any]]:
        """Entries of one kind with ``after`` < id < ``upto``, oldest first."""
        res = await self.etcd.range(base + after + "\0", end=base + upto, limit=limit)
        return [json.loads(kv.value) for kv in res.kvs]

    async def export(self, put: Callable[[str, bytes], Awaitable[None]]) -> dict[str, Any]:
        """Write entries newer than the last export (and at least ``EXPORT_SETTLE`` old) as
        append-only JSON-lines objects through ``put``, then move the cursor on (fenced by its
        revision: of two concurrent exports one moves it, the other's objects hold the same
        entries under the same names)."""
        cursor_key = self.keys.audit_export_cursor()
        upto = id_floor(self.clock() - self.settle)
        objects: list[str] = []
        exported = 0
        for _ in range(1000):  # bounded: 5 million entries per call at most
            kv = await self.etcd.get(cursor_key)
            after = kv.value.decode() if kv is not None else ""
            batch: list[dict[str, Any]] = []
            for kind in KINDS:
                batch += await self.since(self._base(kind), after, upto, EXPORT_BATCH)
            batch.sort(key=lambda d: str(d["id"]))
            batch = batch[:EXPORT_BATCH]
            if not batch:
                break
            first, last = str(batch[0]["id"]), str(batch[-1]["id"])
            body = "".join(json.dumps(d, default=str, sort_keys=True) + "\n" for d in batch)
            key = export_key(first, last)
            await put(key, body.encode())
            guard = [
                Compare.modified(cursor_key, kv.mod_revision) if kv else Compare.absent(cursor_key)
            ]
            res = await self.etcd.txn(guard, [Op.put(cursor_key, last)])
            if not res.succeeded:
                break  # another export moved the cursor meanwhile; it carries on
            objects.append(key)
            exported += len(batch)
            if len(batch) < EXPORT_BATCH:
                break
        kv = await self.etcd.get(cursor_key)
        return {
            "exported": exported,
            "objects": objects,
            "cursor": kv.value.decode() if kv is not None else None,
        }

    async def list(
        self,
        *,
        limit: int = 100,
        before: str | None = None,
        actor: str | None = None,
        kind: Kind | Literal["all"] = "all",
    ) -> list[dict[str, Any]]:
        """Newest first; ``before`` pages by id (ids are shared by both kinds, so paging works
        across the merged list)."""
        kinds: tuple[Kind, ...] = KINDS if kind == "all" else (kind,)
        out: list[dict[str, Any]] = []
        for k in kinds:
            out += await self._list(self._base(k), limit, before, actor)
        out.sort(key=lambda d: str(d.get("id", "")), reverse=True)
        return out[:limit]
