"""The local log folder: one file of msgpack frames per run attempt.

A frame is ``[unix_time, stream, bytes]`` with stream 1 = stdout, 2 = stderr, 0 = a note from
cronmesh itself (truncation, kill). Frames are appended as output arrives, so a crash loses at most
what was still in the process's pipe. ``render_text`` turns frames into readable lines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import msgpack

STREAMS = {0: "cronmesh", 1: "stdout", 2: "stderr"}
STREAM_IDS = {name: sid for sid, name in STREAMS.items()}
DEFAULT_CAP = 64 * 1024 * 1024


class LogWriter:
    def __init__(self, path: Path, cap: int = DEFAULT_CAP) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.cap = cap
        self.written = 0
        self.truncated = False
        self._file: BinaryIO | None = open(path, "ab")
        self._packer = msgpack.Packer()

    def write(self, stream: str, data: bytes) -> None:
        if self._file is None or self.truncated:
            return
        if self.written + len(data) > self.cap:
            data = data[: max(0, self.cap - self.written)]
            self.truncated = True
        if data:
            self._file.write(self._packer.pack([time.time(), STREAM_IDS[stream], data]))
            self.written += len(data)
        if self.truncated:
            self.note(f"output truncated at {self.cap} bytes")
        self._file.flush()  # readers (the live log view) and a crash see what arrived so far

    def note(self, text: str) -> None:
        if self._file is not None:
            self._file.write(self._packer.pack([time.time(), 0, text.encode()]))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class LocalLogStore:
    """Logs kept in a folder on the node that ran the run."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, project: str, run_id: str, attempt: int) -> Path:
        return self.root / project / run_id / f"{attempt}.log"

    def writer(self, project: str, run_id: str, attempt: int) -> LogWriter:
        return LogWriter(self.path(project, run_id, attempt))

    def exists(self, project: str, run_id: str, attempt: int) -> bool:
        return self.path(project, run_id, attempt).exists()

    def frames(self, project: str, run_id: str, attempt: int) -> Iterator[tuple[float, str, bytes]]:
        path = self.path(project, run_id, attempt)
        with open(path, "rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False)
            try:
                for ts, sid, data in unpacker:
                    yield float(ts), STREAMS.get(sid, "?"), bytes(data)
            except (msgpack.OutOfData, ValueError):
                return  # a frame cut by a crash ends the log


def render_text(frames: Iterator[tuple[float, str, bytes]]) -> Iterator[str]:
    """Lines as ``<time> <stream> <text>``; a partial line is held until its stream continues."""
    partial: dict[str, tuple[float, bytes]] = {}

    def line(ts: float, stream: str, raw: bytes) -> str:
        stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
        return f"{stamp.replace('+00:00', 'Z')} {stream} {raw.decode('utf-8', 'replace')}\n"

    for ts, stream, data in frames:
        if stream == "cronmesh":
            yield line(ts, stream, data)
            continue
        start_ts, buf = partial.pop(stream, (ts, b""))
        buf += data
        *lines, rest = buf.split(b"\n")
        for raw in lines:
            yield line(start_ts, stream, raw)
            start_ts = ts
        if rest:
            partial[stream] = (start_ts, rest)
    for stream, (ts, rest) in partial.items():
        yield line(ts, stream, rest)
