"""Log frames and their text form.

A frame is the msgpack array ``[unix_time, stream, bytes]`` with stream 1 = stdout, 2 = stderr,
0 = a note from cronmesh itself (truncation, timeout, kill), 3 = the end of the attempt (empty,
not rendered). The spool holds frames; the store
holds text: one line per output line, ``<UTC time> <stream> <text>``, so plain S3 tools can read
it. ``TextRenderer`` turns frames into lines incrementally, so segments rendered while a run
goes on concatenate to exactly the text of the whole log.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import msgpack

STREAMS = {0: "cronmesh", 1: "stdout", 2: "stderr", 3: "end"}
END = "end"  # the last frame of an attempt that ended (a spool without it was cut by a crash)
STREAM_IDS = {name: sid for sid, name in STREAMS.items()}
MAX_LINE = 64 * 1024
"""A line longer than this is cut into several lines (memory of the renderer stays bounded)."""

Frame = tuple[float, str, bytes]


def pack(ts: float, stream: str, data: bytes) -> bytes:
    return msgpack.packb([ts, STREAM_IDS[stream], data])  # type: ignore[no-any-return]


def read_frames(f: BinaryIO) -> Iterator[tuple[Frame, int]]:
    """Frames of a spool file with the offset just past each; a frame cut by a crash ends it."""
    unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=16 * 1024 * 1024)
    try:
        for item in unpacker:
            ts, sid, data = item
            yield (float(ts), STREAMS.get(sid, "?"), bytes(data)), unpacker.tell()
    except (msgpack.OutOfData, ValueError, TypeError):
        return


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def line(ts: float, stream: str, raw: bytes) -> str:
    return f"{stamp(ts)} {stream} {raw.decode('utf-8', 'backslashreplace')}\n"


class TextRenderer:
    """Frames in, complete lines out; a partial line waits until its stream continues or ends."""

    def __init__(self) -> None:
        self._partial: dict[str, tuple[float, bytes]] = {}
        self._stamp: tuple[float, str] = (-1.0, "")
        self.ended = False

    def feed(self, ts: float, stream: str, data: bytes) -> str:
        if stream == END:
            self.ended = True
            return ""
        if stream == "cronmesh":  # a note ends the lines in progress, so it shows after them
            return self.flush() + line(ts, stream, data)
        out: list[str] = []
        start_ts, buf = self._partial.pop(stream, (ts, b""))
        buf += data
        *lines, rest = buf.split(b"\n")
        if lines:
            out.append(self._long(start_ts, stream, lines[0]))
            start_ts = ts
        if len(lines) > 1:
            out.append(self._same_time(ts, stream, lines[1:]))
        while len(rest) > MAX_LINE:
            out.append(line(start_ts, stream, rest[:MAX_LINE]))
            rest = rest[MAX_LINE:]
        if rest:
            self._partial[stream] = (start_ts, rest)
        return "".join(out)

    def _same_time(self, ts: float, stream: str, lines: list[bytes]) -> str:
        """Many lines of one frame: one time stamp, one decode (the hot path of big outputs)."""
        if max(map(len, lines)) > MAX_LINE:
            return "".join(self._long(ts, stream, raw) for raw in lines)
        if self._stamp[0] != ts:
            self._stamp = (ts, stamp(ts))
        prefix = f"{self._stamp[1]} {stream} "
        text = b"\n".join(lines).decode("utf-8", "backslashreplace")
        return prefix + ("\n" + prefix).join(text.split("\n")) + "\n"

    @staticmethod
    def _long(ts: float, stream: str, raw: bytes) -> str:
        if len(raw) <= MAX_LINE:
            return line(ts, stream, raw)
        return "".join(
            line(ts, stream, raw[i : i + MAX_LINE]) for i in range(0, len(raw), MAX_LINE)
        )

    def copy(self) -> TextRenderer:
        other = TextRenderer()
        other._partial = dict(self._partial)
        return other

    def flush(self) -> str:
        out = "".join(line(ts, stream, rest) for stream, (ts, rest) in self._partial.items())
        self._partial.clear()
        return out


def render_text(frames: Iterable[Frame]) -> Iterator[str]:
    r = TextRenderer()
    for ts, stream, data in frames:
        text = r.feed(ts, stream, data)
        if text:
            yield text
    tail = r.flush()
    if tail:
        yield tail


def parse_line(text: str) -> dict[str, str]:
    """The JSON form of one text line: ``{"time", "stream", "text"}``."""
    when, _, rest = text.rstrip("\n").partition(" ")
    stream, _, body = rest.partition(" ")
    return {"time": when, "stream": stream, "text": body}


def render_from(
    path: Path, offset: int, renderer: TextRenderer, limit: int
) -> tuple[str, int, bool]:
    """Text of a spool's frames from ``offset``, stopping after about ``limit`` bytes of them;
    the offset after the last frame read, and whether it stopped at the limit (more may follow)."""
    out: list[str] = []
    end = offset
    with open(path, "rb") as f:
        f.seek(offset)
        for (ts, stream, data), tell in read_frames(f):
            out.append(renderer.feed(ts, stream, data))
            end = offset + tell
            if end - offset >= limit:
                return "".join(out), end, True
    return "".join(out), end, False
