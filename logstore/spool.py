"""The local spool: every byte of output is written here first, before anything else.

One file of msgpack frames per attempt, at ``<spool>/<project>/<job>/<run>/<attempt>.spool``.
When the attempt ends the writer renames nothing; it writes a ``.done`` marker next to it, so the
uploader knows the spool is complete. A spool file (and its marker) is deleted only after its
final object is in the store, so a node that restarts finds its leftovers and uploads them.

Durability (fsync policy): every frame is written to the file at once (a crash of cronmesh loses
nothing that reached the page cache); the file is fsynced at most every ``fsync_interval``
seconds while output flows and always when the attempt ends, so a machine crash loses at most
that interval — and what the uploader already shipped as segments survives even the disk.

Caps: a run's output is cut at ``run_cap`` bytes with a visible ``cronmesh`` note; when the
spool folder as a whole holds more than ``disk_cap`` bytes not yet uploaded (the store has been
down a long time), new output is dropped with a note instead of filling the disk.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from logstore.frames import pack

DEFAULT_RUN_CAP = 64 * 1024 * 1024
DEFAULT_DISK_CAP = 4 * 1024 * 1024 * 1024


@dataclass(frozen=True)
class LogRef:
    """Which attempt's log: the parts of its object name."""

    project: str
    job: str
    run: str
    attempt: int

    @property
    def rel(self) -> str:
        return f"{self.project}/{self.job}/{self.run}/{self.attempt}"


class SpoolWriter:
    def __init__(
        self,
        spool: Spool,
        ref: LogRef,
        path: Path,
        run_cap: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.spool = spool
        self.ref = ref
        self.path = path
        self.cap = run_cap
        self.clock = clock
        self.written = 0
        self.size = 0
        self.truncated = False
        self.closed = False
        self._file: BinaryIO | None = open(path, "ab")
        self._synced = time.monotonic()
        self._waiters: set[asyncio.Event] = set()

    def write(self, stream: str, data: bytes) -> None:
        """Append output (on the loop thread, as the job writes; never waits for the store)."""
        if self._file is None or self.truncated:
            return
        if self.written + len(data) > self.cap:
            data = data[: max(0, self.cap - self.written)]
            self.truncated = True
        if data and not self.spool.has_room(len(data)):
            self.truncated = True
            data = b""
            self._frame("cronmesh", b"spool disk cap reached: further output dropped")
            return
        if data:
            self._frame(stream, data)
            self.written += len(data)
        if self.truncated:
            self.note(f"output truncated at {self.cap} bytes (per-run cap)")

    def note(self, text: str) -> None:
        self._frame("cronmesh", text.encode())

    def _frame(self, stream: str, data: bytes) -> None:
        if self._file is None:
            return
        frame = pack(self.clock(), stream, data)
        self._file.write(frame)
        self._file.flush()
        self.size += len(frame)
        self.spool.grew(len(frame))
        if time.monotonic() - self._synced >= self.spool.fsync_interval:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()
        for ev in self._waiters:
            ev.set()

    def waiter(self) -> asyncio.Event:
        """An event set on every new frame and at close (for live followers)."""
        ev = asyncio.Event()
        self._waiters.add(ev)
        return ev

    def forget(self, ev: asyncio.Event) -> None:
        self._waiters.discard(ev)

    def close(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self.spool.done_path(self.path).write_bytes(b"")
        self.closed = True
        self.spool.finished(self)
        for ev in self._waiters:
            ev.set()


class Spool:
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        run_cap: int = DEFAULT_RUN_CAP,
        disk_cap: int = DEFAULT_DISK_CAP,
        fsync_interval: float = 1.0,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_cap = run_cap
        self.disk_cap = disk_cap
        self.fsync_interval = fsync_interval
        self.active: dict[LogRef, SpoolWriter] = {}
        self.changed = asyncio.Event()  # set when a spool is opened or finished (uploader wakes)
        self._pending_bytes = sum(p.stat().st_size for p in self.root.rglob("*.spool"))

    def path(self, ref: LogRef) -> Path:
        return self.root / f"{ref.rel}.spool"

    @staticmethod
    def done_path(path: Path) -> Path:
        return path.with_suffix(".done")

    def open(self, ref: LogRef) -> SpoolWriter:
        writer = SpoolWriter(self, ref, self.path(ref), self.run_cap)
        self.active[ref] = writer
        self.changed.set()
        return writer

    def has_room(self, n: int) -> bool:
        return self._pending_bytes + n <= self.disk_cap

    def grew(self, n: int) -> None:
        self._pending_bytes += n

    def finished(self, writer: SpoolWriter) -> None:
        self.active.pop(writer.ref, None)
        self.changed.set()

    def complete(self) -> Iterator[tuple[LogRef, Path]]:
        """Spools whose attempt has ended (including leftovers of an earlier process)."""
        for done in sorted(self.root.glob("*/*/*/*.done")):
            path = done.with_suffix(".spool")
            ref = self.ref_of(path)
            if ref is not None and ref not in self.active:
                yield ref, path

    def orphans(self) -> Iterator[tuple[LogRef, Path]]:
        """Spools without a marker and without a writer: their process died with a crash."""
        for path in sorted(self.root.glob("*/*/*/*.spool")):
            ref = self.ref_of(path)
            if ref is not None and ref not in self.active and not self.done_path(path).exists():
                yield ref, path

    def ref_of(self, path: Path) -> LogRef | None:
        try:
            project, job, run = path.relative_to(self.root).parts[:3]
            return LogRef(project, job, run, int(path.stem))
        except ValueError:
            return None

    def remove(self, path: Path) -> None:
        size = path.stat().st_size if path.exists() else 0
        path.unlink(missing_ok=True)
        self.done_path(path).unlink(missing_ok=True)
        self._pending_bytes = max(0, self._pending_bytes - size)
        parent = path.parent
        for _ in range(3):  # run, job, project folders, when empty
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    @property
    def backlog_bytes(self) -> int:
        return self._pending_bytes

    def find(self, project: str, run: str, attempt: int) -> Path | None:
        """The spool file of an attempt (any job), if this node still holds it."""
        for path in self.root.glob(f"{project}/*/{run}/{attempt}.spool"):
            return path
        return None
