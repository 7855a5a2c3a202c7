"""The local spool: every byte of output is written here first, before anything else.

One file of msgpack frames per attempt, at ``<spool>/<project>/<job>/<run>.<attempt>.spool``
(no folder per run: a run costs one file creation, made at its first frame: an attempt that
writes nothing has no spool and no log object). When the attempt ends the writer appends an
*end* frame; a spool without one was cut by a crash. A spool file is deleted only after its
object is in the store, so a node that restarts finds every leftover and uploads it (a cut one
gets a ``cronmesh`` line saying the node stopped).

Durability (fsync policy): every frame is written to the file at once (a crash of cronmesh loses
nothing that reached the page cache); while output flows the file is fsynced at most every
``fsync_interval`` seconds, so a machine crash loses at most that interval, and what the uploader
already shipped as segments survives even the disk. The end of an attempt is not fsynced on the
event loop: the uploader fsyncs a spool whose upload failed, before it waits for the store.

Caps: a run's output is cut at ``run_cap`` bytes with a visible ``cronmesh`` note; when the
spool as a whole holds more than ``disk_cap`` bytes not yet uploaded (the store has been down a
long time), new output is dropped with a note instead of filling the disk.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from logstore.frames import END, pack

DEFAULT_RUN_CAP = 64 * 1024 * 1024
DEFAULT_DISK_CAP = 4 * 1024 * 1024 * 1024
MAX_ATTEMPT = 1_000_000

# The spellings of a log's path parts (D160): names as cluster/models.py's NAME_PATTERN, a
# workflow task's job as ``@workflow:task``, run ids as snowflakes (decimal digits). None of them
# can hold "/", so a LogRef names a file three folders below the spool root and nowhere else.
_NAME = r"[a-z0-9][a-z0-9\-_.]{0,62}"
PROJECT_RE = re.compile(_NAME)
JOB_RE = re.compile(f"(?:@{_NAME}:)?{_NAME}")
RUN_RE = re.compile(r"[0-9]{1,19}")


class UnsafeLogRef(ValueError):
    """A log reference whose parts could name a file or object outside its own place."""


@dataclass(frozen=True)
class LogRef:
    """Which attempt's log: the parts of its object name. Checked when made: every part has
    its strict spelling, so paths and keys built from it stay where they belong."""

    project: str
    job: str
    run: str
    attempt: int

    def __post_init__(self) -> None:
        if not (
            isinstance(self.project, str)
            and PROJECT_RE.fullmatch(self.project)
            and isinstance(self.job, str)
            and JOB_RE.fullmatch(self.job)
            and isinstance(self.run, str)
            and RUN_RE.fullmatch(self.run)
            and type(self.attempt) is int
            and 1 <= self.attempt <= MAX_ATTEMPT
        ):
            raise UnsafeLogRef(
                f"not a log reference: {self.project!r}/{self.job!r}/{self.run!r}/{self.attempt!r}"
            )

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
        self.spool = spool
        self.ref = ref
        self.path = path
        self.cap = run_cap
        self.clock = clock
        self.written = 0
        self.size = 0
        self.truncated = False
        self.closed = False
        # Created on the first frame: an attempt that prints nothing costs no file at all (no
        # spool, no object; its record says ``output_bytes: 0``), and a crash before any output
        # has nothing to lose. Creating a file is most of a quiet run's log cost (D132).
        self._file: BinaryIO | None = None
        self._synced = time.monotonic()
        self.opened = 0.0
        self._waiters: set[asyncio.Event] = set()

    @property
    def empty(self) -> bool:
        """Nothing was written (no output, no note): there is no spool file and will be no
        log object."""
        return self.size == 0

    def _open(self) -> BinaryIO:
        try:
            self._file = open(self.path, "ab")
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
        self._synced = time.monotonic()
        self.opened = self.spool.monotonic()  # its first output: a segment is due from here (D441)
        return self._file

    def write(self, stream: str, data: bytes) -> None:
        """Append output (on the loop thread, as the job writes; never waits for the store)."""
        if self.closed or self.truncated:
            return
        if self.written + len(data) > self.cap:
            data = data[: max(0, self.cap - self.written)]
            self.truncated = True
        if data and not self.spool.has_room(len(data)):
            self.truncated = True
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
        if self.closed:
            return
        frame = pack(self.clock(), stream, data)
        file = self._file or self._open()
        file.write(frame)
        file.flush()
        self.size += len(frame)
        self.spool.grew(len(frame))
        if time.monotonic() - self._synced >= self.spool.fsync_interval:
            os.fsync(file.fileno())
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
        if self.closed:
            return
        if self._file is not None:
            self._frame(END, b"")
            self._file.close()
            self._file = None
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
        monotonic: Callable[[], float] = time.monotonic,  # the uploader's clock (tests pass one)
    ) -> None:
        self.root = Path(root)
        self.monotonic = monotonic
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_cap = run_cap
        self.disk_cap = disk_cap
        self.fsync_interval = fsync_interval
        self.active: dict[LogRef, SpoolWriter] = {}
        self.ready: dict[LogRef, Path] = {}  # ended attempts whose object is not written yet
        # set when a finished attempt's spool is ready to upload (the uploader wakes); an opened
        # spool waits for the uploader's next pass, at most its segment interval (D387)
        self.changed = asyncio.Event()
        self._pending_bytes = 0

    def path(self, ref: LogRef) -> Path:
        """The spool file of ``ref``; refuses (``UnsafeLogRef``) a path that would leave the
        root, whatever made ``ref`` (a second check behind ``LogRef``'s own)."""
        parts = (ref.project, ref.job, f"{ref.run}.{ref.attempt}.spool")
        if any(not p or p in (".", "..") or "/" in p or "\x00" in p for p in parts):
            raise UnsafeLogRef(f"spool path of {ref.rel!r} leaves the spool")
        path = self.root / ref.project / ref.job / parts[2]
        return path

    def open(self, ref: LogRef) -> SpoolWriter:
        writer = SpoolWriter(self, ref, self.path(ref), self.run_cap)
        self.active[ref] = writer
        return writer

    def has_room(self, n: int) -> bool:
        return self._pending_bytes + n <= self.disk_cap

    def grew(self, n: int) -> None:
        self._pending_bytes += n

    def finished(self, writer: SpoolWriter) -> None:
        self.active.pop(writer.ref, None)
        if not writer.empty:  # an attempt that wrote nothing has nothing to upload
            self.ready[writer.ref] = writer.path
            self.changed.set()

    def scan(self) -> int:
        """Take every spool on disk without a writer as ready (leftovers of an earlier process);
        called at start-up. Returns how many were found."""
        found = 0
        for tmp in self.root.glob("*/*/.*.txt"):  # renderings a crash interrupted
            tmp.unlink(missing_ok=True)
        for path in sorted(self.root.glob("*/*/*.spool")):
            ref = self.ref_of(path)
            if ref is None or ref in self.active or ref in self.ready:
                continue
            self.ready[ref] = path
            self._pending_bytes += path.stat().st_size
            found += 1
        if found:
            self.changed.set()
        return found

    def ref_of(self, path: Path) -> LogRef | None:
        try:
            project, job, name = path.relative_to(self.root).parts
            run, attempt, _ = name.split(".")
            return LogRef(project, job, run, int(attempt))
        except ValueError:  # UnsafeLogRef too: a file that no LogRef names is left alone
            return None

    def remove(self, ref: LogRef) -> None:
        """The attempt's object is in the store: forget its spool."""
        path = self.ready.pop(ref, None) or self.path(ref)
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            size = 0
        self._pending_bytes = max(0, self._pending_bytes - size)

    @property
    def backlog_bytes(self) -> int:
        return self._pending_bytes

    def find(self, project: str, run: str, attempt: int) -> Path | None:
        """The spool file of an attempt (any job), if this node still holds it."""
        if not (PROJECT_RE.fullmatch(project) and RUN_RE.fullmatch(run)):
            raise UnsafeLogRef(f"not a log reference: {project!r}/{run!r}")
        for path in self.root.glob(f"{project}/*/{run}.{int(attempt)}.spool"):
            if self.ref_of(path) is not None:
                return path
        return None
