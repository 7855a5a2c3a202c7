"""Run logs over HTTP: whole, ranged (``offset``/``length`` bytes, ``tail`` lines) or live
(``follow=1``, chunked text or Server-Sent Events), from any node.

Where a log is read from, in order: this node's spool (the attempt runs here, or its upload is
still pending), the log store, and otherwise the node that ran the attempt, through
``node.peers`` to ``/internal/v1/…/logs`` (which serves only what that node holds itself). When
that node is gone, the segments it shipped while the attempt ran are the last resort.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from cluster.errors import (
    InvalidInput,
    NotFound,
    PeerRejected,
    RunNotFound,
    Unavailable,
)
from cluster.fields import NAME_RULE
from cluster.ids import id_floor, is_id
from cluster.models import Run
from logstore.archive import archived_log, archived_runs
from logstore.frames import parse_line
from logstore.packs import source
from logstore.spool import LogRef
from logstore.store import ObjectMissing, StoreUnavailable
from logstore.tail import (
    follow_spool,
    last_lines,
    object_tail,
    object_text,
    segments_text,
    spool_text,
)
from nodes.api.access import PRINCIPAL
from nodes.api.http import NAME_RE, int_query, ok, project_of, require_store, time_query
from nodes.api.logstream import (
    STREAM_TIMEOUT,
    ClientGone,
    Followers,
    Query,
    Slots,
    attempt_log,
    bounded_tail,
    connected,
    decoded,
    followed_by,
    job_query,
    json_frames,
    no_lines,
    prepared,
    quiet,
    sliced,
    spool_tail,
    until_gone,
)
from nodes.api.openapi import documented
from nodes.api.peer import INTERNAL_PREFIX

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

log = structlog.get_logger(__name__)


class LogsApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node
        self.reads = Slots(node.config.log_reads, "log reads")
        self.followers = Followers(node.config.log_followers, node.config.log_followers_per_user)

    # -- public -------------------------------------------------------------------------------

    @documented(
        text="text/plain",
        json_too=True,
        query={"attempt": {"type": "integer", "minimum": 1}, "format": {"enum": ["text", "json"]}},
    )
    async def logs(self, request: web.Request) -> web.StreamResponse:
        project = project_of(request)
        q = Query.parse(request)
        try:
            if q.follow:
                who = request.get(PRINCIPAL)
                with self.followers.take(who.name if who is not None else None):
                    return await self._logs(request, project, q)
            with self.reads.take():
                return await self._logs(request, project, q)
        except ClientGone:
            return web.Response(status=204)  # nobody reads it

    async def _logs(self, request: web.Request, project: str, q: Query) -> web.StreamResponse:
        store = require_store(self.node)
        try:
            run = await store.get_run(project, request.match_info["run"])
        except RunNotFound:
            archived = await self._archived(request, project, q)
            if archived is None:
                raise
            return archived
        attempt = q.attempt or run.attempt
        if q.follow:
            run = await self._started(request, run, attempt)
        ref = LogRef(project, run.job, run.id, attempt)
        ran_on = self._ran_on(run, attempt)
        live = attempt == run.attempt and run.status == "running"
        if live and ran_on == self.node.node_id:
            await self._opened(request, ref)  # claimed a moment ago: the spool opens next
        local = await self._local(request, ref, q)
        if local is not None:
            return local
        if ran_on is not None and ran_on != self.node.node_id and live:
            try:
                return await self._proxy(request, ran_on, ref, q)
            except Unavailable as exc:  # crashed, its lease not expired yet: what it shipped
                try:
                    return await self._segments(request, ref, q)
                except (ObjectMissing, StoreUnavailable):
                    raise _peer_error(
                        exc, f"node {ran_on} that runs run {run.id} cannot be reached"
                    ) from None
        if quiet(run, attempt):
            return await self._empty(request, ref, q)
        try:
            return await self._stored(request, ref, q, attempt_log(run, attempt))
        except (ObjectMissing, StoreUnavailable) as exc:
            store_error = exc
        if ran_on is None:
            raise NotFound(f"no log for attempt {attempt} of run {run.id} yet", field="attempt")
        if ran_on != self.node.node_id:
            try:
                return await self._proxy(request, ran_on, ref, q)
            except Unavailable as exc:
                if isinstance(store_error, StoreUnavailable):
                    raise
                try:
                    return await self._segments(request, ref, q)
                except (ObjectMissing, StoreUnavailable):
                    raise _peer_error(
                        exc,
                        f"node {ran_on} that ran run {run.id} is down and its log is not in "
                        "the store yet: it is uploaded when that node starts again",
                    ) from None
        if isinstance(store_error, StoreUnavailable):
            raise Unavailable(f"the log store is unavailable: {store_error}")
        raise NotFound(f"the log of run {run.id} attempt {attempt} is gone", field="attempt")

    async def _archived(
        self, request: web.Request, project: str, q: Query
    ) -> web.StreamResponse | None:
        """A run pruned from etcd (archived): its log is still in the store, given ``job``."""
        job = job_query(request)
        if job is None:
            return None
        ref = LogRef(project, job, request.match_info["run"], q.attempt or 1)
        local = await self._local(request, ref, q)  # its upload may still be pending
        if local is not None:
            return local
        store = self.node.logs.store
        try:
            try:
                return await self._stored(request, ref, q)
            except ObjectMissing:  # a packed log: its place is in the archived record (D440)
                where = await archived_log(store, project, job, ref.run, ref.attempt)
                return None if where is None else await self._stored(request, ref, q, where)
        except ObjectMissing:
            return None
        except StoreUnavailable as exc:
            raise Unavailable(f"the log store is unavailable: {exc}") from None

    async def _opened(self, request: web.Request, ref: LogRef, within: float = 10.0) -> None:
        """Wait (bounded) for the spool of an attempt this node has just claimed."""
        spool, loop = self.node.logs.spool, asyncio.get_running_loop()
        deadline = loop.time() + within
        while ref not in spool.active and not spool.path(ref).exists():
            if loop.time() > deadline or not connected(request):
                return
            await asyncio.sleep(0.05)

    async def _started(self, request: web.Request, run: Run, attempt: int) -> Run:
        """For ``follow``: wait while the attempt has not started yet, on a watch of the run's
        key (not by reading it again and again), checking every second that the client is still
        there (D164)."""
        store = require_store(self.node)
        key = self.node.keys.run(run.project, run.id)
        while run.status == "pending" and run.attempt <= attempt:
            stored = await store.get_run_kv(run.project, run.id)
            run = stored.run
            if not (run.status == "pending" and run.attempt <= attempt):
                break
            waiter = asyncio.create_task(self._changed(key, stored.mod_revision))
            try:
                while not waiter.done():
                    if not connected(request):
                        raise ClientGone
                    await asyncio.wait({waiter}, timeout=1.0)
                if waiter.exception() is not None:  # the watch broke: read again shortly
                    await asyncio.sleep(0.5)
            finally:
                waiter.cancel()
                with contextlib.suppress(BaseException):
                    await waiter
        return run

    async def _changed(self, key: str, rev: int) -> None:
        """Return at the first change of ``key`` after revision ``rev``."""
        async for batch in self.node.etcd.watch(
            key, start_revision=rev + 1, prefix=False, progress_notify=False
        ):
            if batch.events:
                return

    @staticmethod
    def _ran_on(run: Run, attempt: int) -> str | None:
        if attempt == run.attempt:
            return run.node
        return next((a.node for a in run.attempts if a.attempt == attempt), None)

    # -- internal (a peer asks what this node holds) -------------------------------------------

    async def internal_logs(self, request: web.Request) -> web.StreamResponse:
        q = Query.parse(request)
        if q.follow:
            with self.followers.take(None):
                return await self._internal_logs(request, q)
        with self.reads.take():
            return await self._internal_logs(request, q)

    async def _internal_logs(self, request: web.Request, q: Query) -> web.StreamResponse:
        project, run_id = project_of(request), request.match_info["run"]
        job = job_query(request)
        attempt = q.attempt or 1
        if job is None:
            path = self.node.logs.spool.find(project, run_id, attempt)
            if path is None:
                raise NotFound(f"no log for run {run_id} attempt {attempt} on this node")
            job = path.parent.name
        ref = LogRef(project, job, run_id, attempt)
        local = await self._local(request, ref, q)
        if local is not None:
            return local
        try:
            return await self._stored(request, ref, q)
        except (ObjectMissing, StoreUnavailable):
            pass
        if q.follow:  # claimed here a moment ago: the spool opens next
            await self._opened(request, ref)
            local = await self._local(request, ref, q)
            if local is not None:
                return local
        raise NotFound(f"no log for run {run_id} attempt {attempt} on this node")

    # -- sources -------------------------------------------------------------------------------

    async def _local(
        self, request: web.Request, ref: LogRef, q: Query
    ) -> web.StreamResponse | None:
        spool = self.node.logs.spool
        writer = spool.active.get(ref)
        path = writer.path if writer is not None else spool.path(ref)
        if writer is None and not path.exists():
            return None
        if q.follow:
            live = follow_spool(path, writer, q.tail, alive=lambda: connected(request))
            return await self._stream(request, live, q.sse)
        if writer is not None and writer.empty:
            return self._reply(b"", q, ref)  # nothing written yet: no spool file yet
        if q.tail is not None:
            return self._reply(await asyncio.to_thread(spool_tail, path, q.tail), q, ref)
        if q.fmt == "json":
            return await self._send_json(request, spool_text(path, q.offset, q.length), ref)
        return await self._send(request, spool_text(path, q.offset, q.length))

    async def _stored(
        self, request: web.Request, ref: LogRef, q: Query, where: str | None = None
    ) -> web.StreamResponse:
        """The stored log: the pack member ``where`` (the record's ``log``) names, if it is in
        the store, else the attempt's own object (D440)."""
        store, key = await source(self.node.logs.store, ref, where)
        if q.tail is not None:
            return self._reply(await object_tail(store, key, q.tail), q, ref)
        if q.fmt == "json":
            return await self._send_json(request, object_text(store, key, q.offset, q.length), ref)
        size = await store.size(key)  # raises ObjectMissing before the response starts
        if q.follow:
            return await self._stream(request, decoded(object_text(store, key)), q.sse)
        return await self._send(
            request, object_text(store, key, q.offset, q.length), {"X-Log-Size": str(size)}
        )

    async def _segments(self, request: web.Request, ref: LogRef, q: Query) -> web.StreamResponse:
        """What a crashed worker shipped, streamed (or its tail, bounded), with a note."""
        store = self.node.logs.store
        note = b"(the node that ran this attempt is down: shipped segments only)\n"
        if q.tail is not None:
            pieces = [
                c.decode("utf-8", "replace") async for c in bounded_tail(segments_text(store, ref))
            ]
            data = last_lines(iter(pieces), q.tail)
            return self._reply(data + note if q.fmt == "text" else data, q, ref)
        chunks = sliced(segments_text(store, ref), q.offset, q.length)
        if q.fmt == "json":
            return await self._send_json(request, chunks, ref)
        return await self._send(request, followed_by(chunks, note))

    async def _proxy(
        self, request: web.Request, node_id: str, ref: LogRef, q: Query
    ) -> web.StreamResponse:
        path = f"{INTERNAL_PREFIX}/projects/{ref.project}/runs/{ref.run}/logs"
        params = {**q.params(ref.attempt), "job": ref.job}
        timeout = STREAM_TIMEOUT if q.follow else None
        async with self.node.peers.request(
            "GET", node_id, path, params=params, client_timeout=timeout
        ) as upstream:
            if upstream.status != 200:  # an error answer: small, read at most 64 KiB of it
                body = await upstream.content.read(64 * 1024)
                return web.Response(
                    body=body, status=upstream.status, content_type=upstream.content_type
                )
            if q.follow:
                return await self._stream(request, decoded(upstream.content.iter_any()), q.sse)
            ctype = "application/json" if upstream.content_type == "application/json" else None
            return await self._send(request, upstream.content.iter_chunked(256 * 1024), ctype=ctype)

    # -- responses -----------------------------------------------------------------------------

    async def _empty(self, request: web.Request, ref: LogRef, q: Query) -> web.StreamResponse:
        """The log of an attempt that wrote nothing (it has no object)."""
        if q.follow:
            return await self._stream(request, no_lines(), q.sse)
        return self._reply(b"", q, ref)

    @staticmethod
    async def _send(
        request: web.Request,
        chunks: AsyncIterator[bytes],
        headers: dict[str, str] | None = None,
        ctype: str | None = None,
    ) -> web.StreamResponse:
        """Plain text (or ``ctype``), written as the chunks come (never the whole log in
        memory)."""
        content_type = f"{ctype or 'text/plain'}; charset=utf-8"
        it = aiter(chunks)
        first = await anext(it, None)  # a source that fails at once still gets an error answer
        resp = web.StreamResponse(headers={"Content-Type": content_type, **(headers or {})})
        if not await prepared(resp, request):
            return resp
        with until_gone():
            if first is not None:
                await resp.write(first)
            async for chunk in it:
                await resp.write(chunk)
            await resp.write_eof()
        return resp

    @staticmethod
    async def _send_json(
        request: web.Request, chunks: AsyncIterator[bytes], ref: LogRef
    ) -> web.StreamResponse:
        """The JSON form, written frame by frame as the text comes (never the whole log in
        memory, D163). The first chunk is read before the answer starts, so a missing log is
        still a 404."""
        it = aiter(chunks)
        first = await anext(it, None)
        resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
        if not await prepared(resp, request):
            return resp
        sep, pending = b"", b""

        async def rest() -> AsyncIterator[bytes]:
            if first is not None:
                yield first
            async for chunk in it:
                yield chunk

        with until_gone():
            await resp.write(
                f'{{"run": {json.dumps(ref.run)}, "attempt": {ref.attempt}, "frames": ['.encode()
            )
            await json_frames(resp, rest(), sep, pending)
        return resp

    @staticmethod
    def _reply(data: bytes, q: Query, ref: LogRef) -> web.Response:
        if q.fmt == "json":
            lines = data.decode("utf-8", "replace").split("\n")
            if lines and not lines[-1]:
                lines.pop()
            return ok(
                {"run": ref.run, "attempt": ref.attempt, "frames": [parse_line(x) for x in lines]}
            )
        return web.Response(body=data, content_type="text/plain", charset="utf-8")

    @staticmethod
    async def _stream(
        request: web.Request, chunks: AsyncIterator[str], sse: bool
    ) -> web.StreamResponse:
        ctype = "text/event-stream" if sse else "text/plain; charset=utf-8"
        resp = web.StreamResponse(headers={"Content-Type": ctype, "Cache-Control": "no-cache"})
        if not await prepared(resp, request):
            return resp
        with until_gone():
            pending = ""
            async for text in chunks:
                if not sse:
                    await resp.write(text.encode())
                    continue
                pending += text
                *lines, pending = pending.split("\n")
                if lines:
                    await resp.write(
                        "".join(f"data: {json.dumps(parse_line(x))}\n\n" for x in lines).encode()
                    )
            if sse:
                if pending:
                    await resp.write(f"data: {json.dumps(parse_line(pending))}\n\n".encode())
                await resp.write(b"event: end\ndata: {}\n\n")
            await resp.write_eof()
        return resp


async def list_archived(node: ApiContext, request: web.Request) -> web.Response:
    """``GET …/runs?archived=1[&job=J][&from=T][&to=T][&before=ID][&limit=N]``: archived runs,
    newest first, read from the log store."""
    project = project_of(request)
    job = request.query.get("job") or None
    if job is not None and not NAME_RE.fullmatch(job):
        raise InvalidInput(f"invalid job name {job!r}: {NAME_RULE}", field="job")
    since, until = time_query(request, "from"), time_query(request, "to")
    if since and until and since >= until:
        raise InvalidInput("from must be before to", field="from")
    before = request.query.get("before") or None
    if before is not None and not is_id(before):
        raise InvalidInput("before must be a run id", field="before")
    upper = id_floor(until) if until else "9" * 19
    if before is not None:
        upper = min(upper, before.zfill(19))
    try:
        runs = await archived_runs(
            node.logs.store,
            project,
            job,
            since=id_floor(since) if since else "0",
            until=upper,
            limit=int_query(request, "limit", 50, 1, 1000),
        )
    except StoreUnavailable as exc:
        raise Unavailable(f"the log store is unavailable: {exc}") from None
    return ok({"runs": runs, "archived": True})


def add_routes(app: web.Application, node: ApiContext) -> None:
    api = LogsApi(node)
    app.router.add_get("/api/v1/projects/{project}/runs/{run}/logs", api.logs)
    app.router.add_get(
        f"{INTERNAL_PREFIX}/projects/{{project}}/runs/{{run}}/logs", api.internal_logs
    )


def _peer_error(exc: Unavailable, down: str) -> Unavailable:
    """What to answer when neither the peer nor the store has the log: a refusal stays one."""
    return exc if isinstance(exc, PeerRejected) else Unavailable(down)
