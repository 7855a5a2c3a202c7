"""The etcd client: key/value reads and writes, transactions, leases, watches (``Etcd``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal

import grpc
from aetcd import rpc

from cluster.errors import Compacted, LeaseGone, OutcomeUnknown, Rejected, Unavailable
from cluster.etcd.builders import Op
from cluster.etcd.members import Members, unavailable
from cluster.etcd.observer import active_observer, observe_ops, report
from cluster.etcd.types import KV, Event, Range, TxnResult, WatchBatch, prefix_end


def _too_large(exc: Unavailable) -> bool:
    """The answer was over the client's message cap (gRPC: "Received message larger than
    max")."""
    text = str(exc)
    return "RESOURCE_EXHAUSTED" in text and "larger than max" in text


_NOT_SENT = {grpc.StatusCode.UNAVAILABLE}
# gRPC also says "failed to connect to all addresses" when a connection it had opened closed
# before the server's first bytes arrived (its last error then says so): the request may have
# been written on it and applied (issue 25 found a claim applied under that message). Such a
# write's outcome is unknown, never "not sent".
_MAYBE_SENT = ("socket closed", "connection reset", "broken pipe", "goaway", "end of tcp stream")


def never_sent(code: grpc.StatusCode | None, details: str) -> bool:
    """Did this failed call certainly not reach etcd (so a write did not apply)?"""
    low = details.lower()
    return (
        code in _NOT_SENT
        and "failed to connect" in low
        and not any(word in low for word in _MAYBE_SENT)
    )


# Definitely not applied: the request itself is unacceptable (too large, duplicate key, too many
# operations). Retrying the same request can never succeed.
# RESOURCE_EXHAUSTED answers that pass: etcd is overloaded or out of space (an alarm an operator
# clears); nothing was applied, and the same request may succeed later.
_BUSY = ("too many requests", "database space exceeded")
_REJECTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
}


Skip = Literal["put", "delete"]


def watch_family(key: str) -> str:
    """The first two segments of a watched key (``/cronmesh/queue/`` -> ``/cronmesh/queue``):
    what a client counts the watch events it received by (D348); bounded by the key families."""
    return "/".join(key.split("/", 3)[:3])


class Etcd(Members):
    """An etcd v3 client over one gRPC channel per endpoint, moving to another member when the
    current one stops answering (see the package's docstring)."""

    async def __aenter__(self) -> Etcd:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- key/value -----------------------------------------------------------------------------

    async def get(self, key: str) -> KV | None:
        res = await self.range(key, prefix=False)
        return res.kvs[0] if res.kvs else None

    async def range(
        self,
        key: str,
        *,
        prefix: bool = True,
        end: str | None = None,
        limit: int = 0,
        revision: int = 0,
        descending: bool = False,
        sort: Literal["key", "create", "mod"] = "key",
        keys_only: bool = False,
        count_only: bool = False,
        max_create_revision: int = 0,
        serializable: bool = False,
    ) -> Range:
        """Read one key, a prefix, or ``[key, end)``; newest-first paging uses ``descending``."""
        m = self._stubs()
        req = rpc.RangeRequest(
            key=key.encode(),
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            count_only=count_only,
            max_create_revision=max_create_revision,
            serializable=serializable,
        )
        if end is not None:
            req.range_end = end.encode()
        elif prefix:
            req.range_end = prefix_end(key)
        if descending or sort != "key":
            req.sort_order = rpc.RangeRequest.DESCEND if descending else rpc.RangeRequest.ASCEND
            req.sort_target = {
                "key": rpc.RangeRequest.KEY,
                "create": rpc.RangeRequest.CREATE,
                "mod": rpc.RangeRequest.MOD,
            }[sort]
        try:
            resp = await self._call("Range", m, m.kv.Range, req, self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise unavailable(exc, "range") from exc
        return Range(
            [KV.from_pb(item) for item in resp.kvs], resp.header.revision, resp.more, resp.count
        )

    async def range_pages(
        self,
        key: str,
        *,
        end: str | None = None,
        revision: int = 0,
        keys_only: bool = False,
        page_keys: int = 0,
    ) -> AsyncIterator[Range]:
        """A prefix (or ``[key, end)``) read in pages at one revision (the first page's, unless
        ``revision`` is given): every page's ``revision`` is that one (D161).

        A page holds at most ``page_keys`` keys (default: the client's ``page_keys``); a page
        whose answer is larger than ``max_message`` is read again with half as many keys, so
        any prefix is readable whatever its values weigh (a value is at most etcd's request
        limit, 1.5 MiB by default, well below the cap).
        """
        limit = page_keys or self._page_limits.get(key, self.page_keys)
        start = key
        stop = end if end is not None else prefix_end(key).decode("latin-1")
        while True:
            try:
                res = await self.range(
                    start, end=stop, limit=limit, revision=revision, keys_only=keys_only
                )
            except Unavailable as exc:
                if limit > 1 and _too_large(exc):
                    limit = max(1, limit // 2)
                    if len(self._page_limits) >= 256:  # bounded: forget what was learned
                        self._page_limits.clear()
                    self._page_limits[key] = limit  # the next read of this prefix starts here
                    continue
                raise
            # etcd answers the store's current revision in the header even for a read at an
            # older one: the pages' revision is the first page's, never a later header's (a
            # write between two pages would otherwise move the reader's revision past it, and a
            # watch from there would miss that write)
            revision = revision or res.revision
            yield Range(res.kvs, revision, res.more, res.count)
            if not res.more or not res.kvs:
                return
            start = res.kvs[-1].key + "\x00"

    async def range_all(
        self,
        key: str,
        *,
        end: str | None = None,
        revision: int = 0,
        keys_only: bool = False,
        page_keys: int = 0,
    ) -> Range:
        """Every key of a prefix at one revision, read in pages (``range_pages``): for bulk
        reads whose answer as one range could exceed the client's message cap."""
        kvs: list[KV] = []
        rev = revision
        async for page in self.range_pages(
            key, end=end, revision=revision, keys_only=keys_only, page_keys=page_keys
        ):
            kvs += page.kvs
            rev = page.revision
        return Range(kvs, rev, False, len(kvs))

    async def range_page(
        self, prefix: str, *, after: str | None = None, limit: int, keys_only: bool = False
    ) -> Range:
        """One page of a listing: at most ``limit`` keys of ``prefix`` after the key
        ``prefix + after`` (read in sub-pages that fit the message cap); ``more`` says whether
        keys follow (D161)."""
        start = prefix + (after + "\x00" if after is not None else "")
        stop = prefix_end(prefix).decode("latin-1")
        kvs: list[KV] = []
        rev, more = 0, False
        async for page in self.range_pages(
            start, end=stop, keys_only=keys_only, page_keys=min(limit + 1, self.page_keys)
        ):
            kvs += page.kvs
            rev, more = page.revision, page.more
            if len(kvs) > limit:
                break
        if len(kvs) > limit:
            kvs, more = kvs[:limit], True
        return Range(kvs, rev, more, len(kvs))

    async def put(self, key: str, value: bytes | str, *, lease: int = 0) -> int:
        m = self._stubs()
        data = value.encode() if isinstance(value, str) else value
        observer = active_observer()
        if observer is not None:  # observed writes go as transactions, to carry the journal
            return (await self.txn([], [Op.put(key, data, lease)])).revision
        try:
            req = rpc.PutRequest(
                key=key.encode(), value=data, lease=lease, prev_kv=observer is not None
            )
            resp = await self._call("Put", m, m.kv.Put, req, self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise unavailable(exc, "put") from exc
        if observer is not None:
            prev = bytes(resp.prev_kv.value) if resp.HasField("prev_kv") else None
            observer.add(key, prev, data)
        return int(resp.header.revision)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        m = self._stubs()
        observer = active_observer()
        if observer is not None:
            res = await self.txn([], [Op.delete(key, prefix=prefix)])
            return int(res.responses[0].response_delete_range.deleted)
        req = rpc.DeleteRangeRequest(key=key.encode(), prev_kv=observer is not None)
        if prefix:
            req.range_end = prefix_end(key)
        try:
            resp = await self._call("DeleteRange", m, m.kv.DeleteRange, req, self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise unavailable(exc, "delete") from exc
        if observer is not None:
            for item in resp.prev_kvs:
                observer.add(item.key.decode(), bytes(item.value), None)
        return int(resp.deleted)

    async def txn(
        self, compare: Iterable[Any], success: Iterable[Any], failure: Iterable[Any] = ()
    ) -> TxnResult:
        """Run one transaction. Raises OutcomeUnknown when the reply may have been lost."""
        req = rpc.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        return await self.txn_request(req)

    async def txn_request(self, req: Any) -> TxnResult:
        """:meth:`txn` of a prepared ``rpc.TxnRequest`` (the group commit builds its own)."""
        m = self._stubs()
        observer = active_observer()
        ran_ops = {True: list(req.success), False: list(req.failure)}  # without the journal
        if observer is not None:
            observe_ops(ran_ops[True])
            observe_ops(ran_ops[False])
            for branch in (req.success, req.failure):
                entry = observer.journal(list(branch))
                if entry is not None:
                    branch.append(entry)
        try:
            resp = await self._call("Txn", m, m.kv.Txn, req, self.timeout)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if never_sent(exc.code(), details):
                raise unavailable(exc, "txn") from exc  # never left this process
            if "lease not found" in details:
                raise LeaseGone(f"etcd txn rejected: {details}") from exc
            if any(word in details for word in _BUSY):
                # refused for now, not for ever: nothing applied, and the same request can
                # succeed later (the caller retries as after any unavailability)
                raise unavailable(exc, "txn") from exc
            if exc.code() in _REJECTED:
                raise Rejected(f"etcd rejected the transaction: {details}") from exc
            raise OutcomeUnknown(f"etcd txn: {exc.code().name}: {details}") from exc
        if observer is not None:
            report(observer, ran_ops[bool(resp.succeeded)], list(resp.responses))
        return TxnResult(bool(resp.succeeded), int(resp.header.revision), list(resp.responses))

    # -- leases --------------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        m = self._stubs()
        try:
            req = rpc.LeaseGrantRequest(TTL=ttl)
            resp = await self._call("LeaseGrant", m, m.lease.LeaseGrant, req, self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise unavailable(exc, "lease grant") from exc
        if resp.error:
            raise Unavailable(f"etcd lease grant: {resp.error}")
        return int(resp.ID)

    async def keepalive(self, lease_id: int, *, deadline: float | None = None) -> int:
        """Refresh a lease once; answers the new TTL, 0 when the lease no longer exists.

        ``deadline`` should be a fraction of the TTL: a member that does not answer in time is
        left for another one while the lease still has time to be refreshed there.
        """
        m = self._stubs()
        await self._stream_auth()
        call = m.lease.LeaseKeepAlive(timeout=deadline or self.timeout, metadata=self._metadata())
        try:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
            await call.done_writing()
            async for reply in call:
                return int(reply.TTL)
        except grpc.aio.AioRpcError as exc:
            self._failed(m, exc)
            await self._stream_auth(exc)
            raise unavailable(exc, "lease keepalive") from exc
        finally:
            call.cancel()
        return 0

    async def time_to_live(self, lease_id: int) -> tuple[int, int]:
        """(remaining TTL, granted TTL) of a lease in seconds; remaining is -1 when it is gone."""
        m = self._stubs()
        try:
            req = rpc.LeaseTimeToLiveRequest(ID=lease_id)
            resp = await self._call(
                "LeaseTimeToLive", m, m.lease.LeaseTimeToLive, req, self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise unavailable(exc, "lease ttl") from exc
        return int(resp.TTL), int(resp.grantedTTL)

    async def revoke(self, lease_id: int, *, deadline: float | None = None) -> None:
        m = self._stubs()
        try:
            req = rpc.LeaseRevokeRequest(ID=lease_id)
            await self._call("LeaseRevoke", m, m.lease.LeaseRevoke, req, deadline or self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise unavailable(exc, "lease revoke") from exc

    # -- watches -------------------------------------------------------------------------------

    async def watch(
        self,
        key: str,
        *,
        start_revision: int,
        prefix: bool = True,
        progress_notify: bool = True,
        skip: Skip | None = None,
        end: str | None = None,
    ) -> AsyncIterator[WatchBatch]:
        """Stream changes from ``start_revision`` on, in order; ends only by error or cancel.
        ``end``: the keys ``[key, end)`` (two neighbouring prefixes in one order, D410).
        ``skip`` ("put" or "delete"): etcd leaves those events out (its NOPUT / NODELETE
        filters), so a watcher that ignores them does not receive and decode them (D349).

        Raises :class:`Compacted` when ``start_revision`` is gone, :class:`Unavailable` when the
        stream breaks; the caller re-reads and re-watches from the last revision it saw.
        """
        m = self._stubs()
        create = rpc.WatchCreateRequest(
            key=key.encode(), start_revision=start_revision, progress_notify=progress_notify
        )
        if skip is not None:
            create.filters.append(
                rpc.WatchCreateRequest.NOPUT if skip == "put" else rpc.WatchCreateRequest.NODELETE
            )
        family = watch_family(key)
        if end is not None:
            create.range_end = end.encode()
        elif prefix:
            create.range_end = prefix_end(key)
        await self._stream_auth()
        call = m.watch.Watch(metadata=self._metadata())
        m.streams.add(call)
        try:
            await call.write(rpc.WatchRequest(create_request=create))
            async for resp in call:
                if resp.compact_revision:
                    raise Compacted(int(resp.compact_revision))
                if resp.canceled:
                    raise Unavailable(f"etcd watch canceled: {resp.cancel_reason}")
                if resp.created and not resp.events:
                    continue
                if resp.events:
                    self.watch_events[family] = self.watch_events.get(family, 0) + len(resp.events)
                    self.watch_responses[family] = self.watch_responses.get(family, 0) + 1
                events = [
                    Event("delete" if ev.type == rpc.Event.DELETE else "put", KV.from_pb(ev.kv))
                    for ev in resp.events
                ]
                # the position to resume after: the last event's revision, never the header's
                # (a batch of past history holds ≤ 1000 revisions, but its header names the
                # store's current revision: resuming there skipped the rest, D364)
                last = events[-1].kv.mod_revision if events else int(resp.header.revision)
                yield WatchBatch(events, last)
            raise Unavailable("etcd watch stream ended")
        except grpc.aio.AioRpcError as exc:
            self._failed(m, exc)
            await self._stream_auth(exc)
            raise unavailable(exc, "watch") from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if m.retired and (task is None or not task.cancelling()):
                # the client left this member (``_retire`` cancelled the stream), not our caller
                raise Unavailable(f"etcd watch moved off member {m.endpoint}") from None
            raise
        finally:
            m.streams.discard(call)
            call.cancel()

    async def status(self) -> dict[str, Any]:
        m = self._stubs()
        try:
            resp = await self._call("Status", m, m.maint.Status, rpc.StatusRequest(), self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise unavailable(exc, "status") from exc
        return {
            "version": resp.version,
            "db_size": int(resp.dbSize),
            "leader": int(resp.leader),
            "raft_term": int(resp.raftTerm),
            "revision": int(resp.header.revision),
        }

    async def wait_ready(self, deadline: float) -> None:
        """Poll until etcd answers (with backoff) or raise Unavailable at loop time ``deadline``."""
        loop = asyncio.get_running_loop()
        delay = 0.05
        while True:
            try:
                await self.status()
                return
            except Unavailable:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
