"""Reading logs: whole, a byte range, the last N lines, or live (following a spool as it grows).

Everything here yields text in bounded chunks; nothing holds a whole log in memory: ``tail``
keeps at most ``TAIL_BYTES`` (the newest lines that fit), and the JSON form is streamed by the API
(D163).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from cluster.waiting import woken
from logstore.frames import TextRenderer, read_frames, render_from, render_text
from logstore.spool import LogRef, SpoolWriter
from logstore.store import LogStore, ObjectMissing, segments_prefix

CHUNK = 1024 * 1024
MAX_TAIL = 100_000
# The most a ``tail`` answer holds (and reads from a store object): the newest lines that fit.
TAIL_BYTES = 16 * 1024 * 1024


async def object_text(
    store: LogStore, key: str, start: int = 0, length: int | None = None
) -> AsyncIterator[bytes]:
    """A stored object (or a byte range of it) in chunks of at most ``CHUNK`` bytes."""
    size = await store.size(key)
    end = size if length is None else min(size, start + length)
    pos = start
    while pos < end:
        chunk = await store.read(key, pos, min(end, pos + CHUNK))
        if not chunk:
            return
        yield chunk
        pos += len(chunk)


async def object_tail(store: LogStore, key: str, lines: int, max_bytes: int = TAIL_BYTES) -> bytes:
    """The last ``lines`` lines of an object, read backwards in growing ranges, never more than
    ``max_bytes`` of it (then the complete lines within those bytes; one line longer than that
    comes as its last ``max_bytes``)."""
    size = await store.size(key)
    want = min(64 * 1024, max_bytes)
    while True:
        n = min(size, want)
        data = await store.read(key, size - n) if n else b""
        if n == size or data.count(b"\n") > lines or want >= max_bytes:
            break
        want = min(want * 4, max_bytes)
    parts = data.split(b"\n")
    trailing = parts[-1] == b""
    if trailing:
        parts.pop()
    if n < size and len(parts) > 1:
        parts = parts[1:]  # the first one is cut: not a whole line
    keep = parts[-lines:] if lines else []
    return b"\n".join(keep) + (b"\n" if keep and trailing else b"")


async def segments_text(store: LogStore, ref: LogRef) -> AsyncIterator[bytes]:
    """What a crashed worker had shipped while it ran (concatenated segments)."""
    keys = await store.keys(segments_prefix(ref))
    if not keys:
        raise ObjectMissing(segments_prefix(ref))
    for key in keys:
        yield await store.read(key)


def spool_lines(path: Path) -> Iterator[str]:
    with open(path, "rb") as f:
        yield from render_text(frame for frame, _ in read_frames(f))


def split_lines(text: str) -> list[str]:
    """Lines with their ``\\n`` (only ``\\n`` ends a line; ``\\r`` and friends are output)."""
    parts = [p + "\n" for p in text.split("\n")]
    parts[-1] = parts[-1][:-1]
    return parts if parts[-1] else parts[:-1]


def last_lines(chunks: Iterator[str], n: int, max_bytes: int = TAIL_BYTES) -> bytes:
    """The last ``n`` lines of a text given in chunks, holding at most about ``max_bytes``
    (characters) at any time: the newest lines that fit."""
    kept: deque[str] = deque()
    size = 0
    partial = ""
    if n <= 0:
        for _ in chunks:
            pass
        return b""
    for chunk in chunks:
        *done, partial = (partial + chunk).split("\n")
        for line in done:
            kept.append(line + "\n")
            size += len(line) + 1
        if len(partial) > max_bytes:
            partial = partial[-max_bytes:]
        while kept and (len(kept) > n or size + len(partial) > max_bytes):
            size -= len(kept.popleft())
    if partial:
        kept.append(partial)
        size += len(partial)
        while len(kept) > 1 and (len(kept) > n or size > max_bytes):
            size -= len(kept.popleft())
    return "".join(kept).encode()


async def follow_spool(
    path: Path,
    writer: SpoolWriter | None,
    skip_lines: int | None = None,
    alive: Callable[[], bool] = lambda: True,
) -> AsyncIterator[str]:
    """The text of a spool, then its new lines as the job writes them, until the attempt ends
    (or ``alive()`` turns false: the client went away).

    ``skip_lines`` N: start with only the last N lines of what is there already.
    """
    ev = writer.waiter() if writer is not None else None
    renderer = TextRenderer()
    offset = 0
    try:
        first = True
        while True:
            if ev is not None:
                ev.clear()
            done = writer is None or writer.closed
            # at most CHUNK of spool per read: a follower far behind a fast job (or joining a
            # big log) catches up in bounded steps, never by rendering the whole backlog at once
            text, offset, more = await asyncio.to_thread(_read_from, path, offset, renderer)
            if first and skip_lines is not None:
                kept = deque(split_lines(text), maxlen=skip_lines)
                while more:
                    text, offset, more = await asyncio.to_thread(_read_from, path, offset, renderer)
                    kept.extend(split_lines(text))
                text = "".join(kept)
            first = False
            if text:
                yield text
            if more:
                continue
            if done:
                tail = renderer.flush()
                if tail:
                    yield tail
                return
            if not alive():
                return
            assert ev is not None
            await woken(ev, 1.0)
    finally:
        if ev is not None and writer is not None:
            writer.forget(ev)


async def spool_text(path: Path, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
    """A spool's text as it is now (or bytes ``start``..``start+length`` of it), rendered in
    bounded steps."""
    renderer = TextRenderer()
    offset, pos, more = 0, 0, True
    end = None if length is None else start + length
    while more:
        text, offset, more = await asyncio.to_thread(_read_from, path, offset, renderer)
        if not more:
            text += renderer.flush()
        data = text.encode()
        lo, pos = pos, pos + len(data)
        if pos <= start:
            continue
        if end is not None and lo >= end:
            return
        piece = data[max(0, start - lo) : None if end is None else end - lo]
        if piece:
            yield piece


def _read_from(path: Path, offset: int, renderer: TextRenderer) -> tuple[str, int, bool]:
    """At most ``CHUNK`` of spool from ``offset`` (see ``render_from``)."""
    try:
        return render_from(path, offset, renderer, CHUNK)
    except FileNotFoundError:
        return "", offset, False  # a running attempt's spool is created at its first output
