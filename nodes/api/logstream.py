"""What the log endpoints' answers are made of: the request's query, the read slots and the
followers (D163, D164), and the transformations of a stream of chunks (decoding, slicing,
bounded tails, JSON frames)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import structlog
from aiohttp import web

from cluster.errors import (
    InvalidInput,
    TooManyRequests,
)
from cluster.fields import NAME_RULE
from cluster.models import Run
from logstore.frames import parse_line
from logstore.spool import JOB_RE
from logstore.tail import (
    MAX_TAIL,
    TAIL_BYTES,
    last_lines,
    spool_lines,
)
from nodes.api.http import int_query

if TYPE_CHECKING:
    pass

log = structlog.get_logger(__name__)

STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None)
# A line of the JSON form longer than this is split into several frames (bounded memory, D163).
MAX_JSON_LINE = 1024 * 1024


class Slots:
    """At most ``limit`` of something at once on this node; ``take`` answers 429 when full
    (never queues: a flood must not pile up waiting requests) (D163)."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.used = 0

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        if self.used >= self.limit:
            raise TooManyRequests(
                f"{self.limit} {self.what} are running on this node; retry shortly",
                retry_after=1.0,
            )
        self.used += 1
        try:
            yield
        finally:
            self.used -= 1


@dataclass(frozen=True)
class Query:
    attempt: int | None
    fmt: str  # text | json
    follow: bool
    sse: bool
    tail: int | None
    offset: int
    length: int | None

    @classmethod
    def parse(cls, request: web.Request) -> Query:
        q = request.query
        fmt = q.get("format", "text")
        if fmt not in ("text", "json"):
            raise InvalidInput("format must be text or json", field="format")
        follow = q.get("follow", "0").lower()
        if follow not in ("0", "1", "true", "false", ""):
            raise InvalidInput("follow must be 1 or 0", field="follow")
        tail = int_query(request, "tail", -1, 0, MAX_TAIL)
        length = int_query(request, "length", -1, 0, 2**62)
        query = cls(
            attempt=int_query(request, "attempt", 0, 1, 1000) or None,
            fmt=fmt,
            follow=follow in ("1", "true"),
            sse="text/event-stream" in request.headers.get("Accept", ""),
            tail=None if tail < 0 else tail,
            offset=int_query(request, "offset", 0, 0, 2**62),
            length=None if length < 0 else length,
        )
        if query.tail is not None and (query.offset or query.length is not None):
            raise InvalidInput("tail cannot be combined with offset/length", field="tail")
        if query.follow and (query.fmt == "json" or query.offset or query.length is not None):
            raise InvalidInput("follow streams text; drop format/offset/length", field="follow")
        return query

    def params(self, attempt: int) -> dict[str, str]:
        out = {"attempt": str(attempt), "format": self.fmt, "offset": str(self.offset)}
        if self.follow:
            out["follow"] = "1"
        if self.tail is not None:
            out["tail"] = str(self.tail)
        if self.length is not None:
            out["length"] = str(self.length)
        return out


class Followers:
    """Live followers on this node: at most ``per_node`` in all and ``per_user`` per user (a
    peer's proxied follow counts towards the node only: its user was counted where they asked);
    more answer 429 (D164)."""

    def __init__(self, per_node: int, per_user: int) -> None:
        self.per_node = per_node
        self.per_user = per_user
        self.total = 0
        self.by_user: dict[str, int] = {}

    @contextlib.contextmanager
    def take(self, user: str | None) -> Iterator[None]:
        if self.total >= self.per_node:
            raise TooManyRequests(
                f"{self.per_node} log followers are open on this node; retry later",
                retry_after=5.0,
            )
        if user is not None and self.by_user.get(user, 0) >= self.per_user:
            raise TooManyRequests(
                f"user {user!r} already follows {self.per_user} logs on this node; close one first",
                retry_after=5.0,
            )
        self.total += 1
        if user is not None:
            self.by_user[user] = self.by_user.get(user, 0) + 1
        try:
            yield
        finally:
            self.total -= 1
            if user is not None:
                left = self.by_user.get(user, 1) - 1
                if left > 0:
                    self.by_user[user] = left
                else:
                    self.by_user.pop(user, None)


class ClientGone(Exception):
    """The client closed its connection: the request ends quietly (not an error)."""


async def decoded(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    import codecs

    dec = codecs.getincrementaldecoder("utf-8")("replace")
    async for chunk in chunks:
        text = dec.decode(chunk)
        if text:
            yield text
    tail = dec.decode(b"", final=True)
    if tail:
        yield tail


async def sliced(
    chunks: AsyncIterator[bytes], offset: int, length: int | None
) -> AsyncIterator[bytes]:
    """Bytes ``offset``..``offset+length`` of a chunked text, as chunks."""
    pos = 0
    end = None if length is None else offset + length
    async for chunk in chunks:
        lo, pos = pos, pos + len(chunk)
        if pos <= offset:
            continue
        if end is not None and lo >= end:
            return
        piece = chunk[max(0, offset - lo) : None if end is None else end - lo]
        if piece:
            yield piece


async def bounded_tail(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks, keeping at most ``TAIL_BYTES`` of the newest in memory before yielding."""
    kept: list[bytes] = []
    size = 0
    async for chunk in chunks:
        kept.append(chunk)
        size += len(chunk)
        while len(kept) > 1 and size - len(kept[0]) >= TAIL_BYTES:
            size -= len(kept.pop(0))
    for chunk in kept:
        yield chunk


async def followed_by(chunks: AsyncIterator[bytes], last: bytes) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield chunk
    yield last


async def json_frames(
    resp: web.StreamResponse, chunks: AsyncIterator[bytes], sep: bytes, pending: bytes
) -> None:
    """Write the frames of a chunked text, then close the JSON document."""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) > MAX_JSON_LINE:
            lines.append(pending)
            pending = b""
        if lines:
            body = b",".join(
                json.dumps(parse_line(x.decode("utf-8", "replace"))).encode() for x in lines
            )
            await resp.write(sep + body)
            sep = b","
    if pending:
        await resp.write(sep + json.dumps(parse_line(pending.decode("utf-8", "replace"))).encode())
    await resp.write(b"]}")
    await resp.write_eof()


@contextlib.contextmanager
def until_gone() -> Iterator[None]:
    """A client that closes its connection mid-answer ends the answer: a normal end, not an
    error with a traceback (D164)."""
    try:
        yield
    except ConnectionError:  # reset, aiohttp's ClientConnectionResetError, and the plain
        # ConnectionError("Connection lost") a paused write gets when the reader closes
        log.debug("log reader went away")


async def prepared(resp: web.StreamResponse, request: web.Request) -> bool:
    """Send a streamed answer's headers; False when the client went away before they could go
    (a reader that closed while its first chunk was read): nothing more to send, and no error
    (D164). aiohttp answers such a response as a closed connection."""
    try:
        await resp.prepare(request)
    except ConnectionError:
        log.debug("log reader went away before the answer started")
        return False
    return True


def job_query(request: web.Request) -> str | None:
    """The ``job`` query parameter (a job name, or ``@workflow:task``), checked: it becomes part
    of a spool path and an object key (D160)."""
    job = request.query.get("job")
    if job is None or job == "":
        return None
    if not JOB_RE.fullmatch(job):
        raise InvalidInput(f"invalid job name {job!r}: {NAME_RULE}", field="job")
    return job


def connected(request: web.Request) -> bool:
    return request.transport is not None and not request.transport.is_closing()


def quiet(run: Run, attempt: int) -> bool:
    """The attempt finished having written nothing, so it has no log object (D132)."""
    for a in run.attempts:
        if a.attempt == attempt:
            return a.output_bytes == 0 and a.log is None
    return False


def attempt_log(run: Run, attempt: int) -> str | None:
    """Where the record says the attempt's log is (an object, or a pack member: D440)."""
    for a in run.attempts:
        if a.attempt == attempt:
            return a.log
    return None


async def no_lines() -> AsyncIterator[str]:
    return
    yield  # an async generator that yields nothing


def spool_tail(path: Path, lines: int) -> bytes:
    return last_lines(spool_lines(path), lines)
