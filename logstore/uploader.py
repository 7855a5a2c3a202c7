"""Ships spools to the log store: segments while an attempt runs, one object when it ends.

- Every ``segment_interval`` seconds, the new output of each running attempt is rendered to text
  and written as the next segment object, so a worker whose disk is lost loses at most that
  interval of output.
- When an attempt ends, its whole spool is rendered (in memory when small, else to a temporary text
  file) and uploaded as the attempt's object (multipart when big); then the segments and the
  spool are deleted.
- Up to ``concurrency`` uploads run at once (boto3 calls run in threads).
- A failed upload is retried with exponential backoff (``retry_min`` doubling to ``retry_max``);
  the spool stays on disk until its object is written, also across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from cluster.waiting import woken
from logstore import metrics
from logstore.frames import TextRenderer, read_frames, render_from
from logstore.packs import MEMBER_MAX, Pack, Packer
from logstore.spool import LogRef, Spool, SpoolWriter
from logstore.store import (
    LogStore,
    ObjectMissing,
    StoreUnavailable,
    log_key,
    segment_key,
    segments_prefix,
)

log = structlog.get_logger(__name__)


SEGMENT_MAX = 8 * 1024 * 1024
# A spool up to this size is rendered in memory and written with one PUT (D133); larger ones go
# through a temporary text file and boto3's transfer manager (multipart above 16 MiB).
SMALL_OBJECT = 2 * 1024 * 1024
SEGMENTS_PER_PASS = 8


@dataclass
class _Shipping:
    offset: int = 0
    seq: int = 0
    renderer: TextRenderer = field(default_factory=TextRenderer)
    last: float = 0.0


@dataclass
class _Backoff:
    delay: float
    next_try: float


CUT_NOTE = b"the node stopped before this attempt ended; log ends here"


def _render(spool_path: Path, write: Callable[[str], object]) -> None:
    renderer = TextRenderer()
    last_ts = 0.0
    with open(spool_path, "rb") as src:
        for (ts, stream, data), _ in read_frames(src):
            text = renderer.feed(ts, stream, data)
            last_ts = ts
            if text:
                write(text)
        if not renderer.ended:
            write(renderer.feed(max(last_ts, time.time()), "cronmesh", CUT_NOTE))
        write(renderer.flush())


def render_file(spool_path: Path, out_path: Path) -> int:
    """Render a spool file to a text file; returns the text's size in bytes. A spool without
    its end frame (cut by a crash) gets a ``cronmesh`` line saying so."""
    with open(out_path, "w", encoding="utf-8", newline="") as out:
        _render(spool_path, out.write)
        out.flush()
        return os.fstat(out.fileno()).st_size


def render_small(spool_path: Path, limit: int) -> bytes | None:
    """The rendered text of a spool of at most ``limit`` bytes, in memory (None: larger)."""
    if os.stat(spool_path).st_size > limit:
        return None
    parts: list[str] = []
    _render(spool_path, parts.append)
    return "".join(parts).encode()


class Uploader:
    def __init__(
        self,
        spool: Spool,
        store: LogStore,
        *,
        segment_interval: float = 2.0,
        retry_min: float = 0.5,
        retry_max: float = 10.0,
        now: Callable[[], float] = time.monotonic,
        concurrency: int = 8,
        packer: Packer | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.packer = packer  # small finished logs go in packs (D440); None: each its own object
        self.spool = spool
        self.store = store
        self.segment_interval = segment_interval
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.now = now
        self._shipping: dict[LogRef, _Shipping] = {}
        self._backoff: dict[LogRef, _Backoff] = {}
        # spools an earlier process left: it may have shipped segments of them
        self._recovered: set[LogRef] = set()
        self.uploaded: asyncio.Event = asyncio.Event()  # set after each final upload (tests)
        self._pack_backoff: dict[str, _Backoff] = {}
        self._putting: set[str] = set()  # packs whose PUT is on its way
        self._draining = False

    def recover(self) -> int:
        """Queue the spools an earlier process left (at start-up, before any run starts)."""
        n = self.spool.scan()
        self._recovered.update(self.spool.ready)
        if n:
            log.info("uploading leftover spools", count=n)
        return n

    async def run(self) -> None:
        while True:
            self.spool.changed.clear()
            try:
                await self.pass_once()
            except Exception:  # a bug or a full disk must not stop shipping for good
                log.exception("log upload pass failed; retrying")
                await asyncio.sleep(self.retry_max)
            await woken(self.spool.changed, self._sleep())

    def _sleep(self) -> float:
        waits = [self.segment_interval]
        now = self.now()
        waits += [b.next_try - now for b in self._backoff.values()]
        waits += [b.next_try - now for b in self._pack_backoff.values()]
        if self.packer is not None and (due := self.packer.next_due(now)) is not None:
            waits.append(due)
        return max(0.05, min(waits))

    def pack(self, writer: SpoolWriter) -> str | None:
        """The key and range of ``writer``'s log in a pack (D440), for its record; None when it
        keeps an object of its own (no packing, too big, segments shipped, memory bound). Called
        as the attempt's spool closes, on the loop: a small log renders in tens of µs."""
        ref = writer.ref
        if self.packer is None or writer.empty or writer.size > MEMBER_MAX:
            return None
        if ref in self._shipping or ref in self._recovered:
            return None  # a segment was tried (or is on its way): its own object, segments cleaned
        path = self.spool.ready.get(ref)
        if path is None:
            return None
        try:
            text = render_small(path, MEMBER_MAX)
        except OSError:
            return None
        if text is None:
            return None
        member = self.packer.place(ref, text, self.now())
        if member is None:
            return None
        del self.spool.ready[ref]  # its spool stays on disk until the pack is written
        if self.packer.sealed:
            self.spool.changed.set()
        return f"{self.store.url(member.key)}#{member.offset}+{member.length}"

    @property
    def backlog(self) -> int:
        """Finished attempts whose log is not in the store yet (own objects and packed)."""
        return len(self.spool.ready) + (len(self.packer.held) if self.packer else 0)

    async def pass_once(self) -> None:
        """One round: ship due segments of running attempts, upload finished spools."""
        sem = asyncio.Semaphore(self.concurrency)

        async def bounded(coro: Awaitable[object]) -> None:
            async with sem:
                await coro

        now = self.now()
        jobs = [bounded(self._segment(ref, w)) for ref, w in self._due(now)]
        for ref, path in list(self.spool.ready.items()):
            b = self._backoff.get(ref)
            if b is None or b.next_try <= now:
                jobs.append(bounded(self._final(ref, path)))
        if self.packer is not None:
            for pack in self.packer.due(now, everything=self._draining):
                b = self._pack_backoff.get(pack.name)
                if (b is None or b.next_try <= now) and pack.name not in self._putting:
                    self._putting.add(pack.name)  # a stop's drain may run a pass beside this one
                    jobs.append(bounded(self._put_pack(pack)))
        await asyncio.gather(*jobs)
        metrics.SPOOL_BACKLOG_FILES.set(self.backlog)
        metrics.SPOOL_BACKLOG_BYTES.set(self.spool.backlog_bytes)

    def _due(self, now: float) -> list[tuple[LogRef, SpoolWriter]]:
        """The running attempts with a segment to ship now (D387): checked here, in one loop, so
        a pass costs no task for the hundreds of attempts that wrote nothing new or shipped a
        segment less than ``segment_interval`` ago. The shipping state of an attempt that ended
        without output (it never becomes ready, so ``_final`` never forgets it) is dropped."""
        active = self.spool.active
        for ref in [r for r in self._shipping if r not in active and r not in self.spool.ready]:
            del self._shipping[ref]
        due: list[tuple[LogRef, SpoolWriter]] = []
        for ref, writer in active.items():
            st = self._shipping.get(ref)
            if st is not None and now - st.last < self.segment_interval:
                continue
            b = self._backoff.get(ref)
            if b is not None and b.next_try > now:
                continue
            if writer.size <= (st.offset if st is not None else 0):
                if st is not None:
                    st.last = now
                continue
            if st is None and now - writer.opened < self.segment_interval:
                continue  # a first segment once its first output is an interval old (D441)
            due.append((ref, writer))
        return due

    def _failed(self, ref: LogRef, exc: Exception, kind: str) -> None:
        b = self._backoff.get(ref)
        if b is None and kind == "final":
            self._sync(ref)
        delay = self.retry_min if b is None else min(b.delay * 2, self.retry_max)
        self._backoff[ref] = _Backoff(delay, self.now() + delay)
        metrics.UPLOADS.labels(kind, "error").inc()
        log.warning(
            "log upload failed; will retry", log=ref.rel, kind=kind, retry_in=delay, error=str(exc)
        )

    async def _segment(self, ref: LogRef, writer: SpoolWriter) -> None:
        if writer.closed:
            return  # ended while this waited its turn: its log goes whole (or packed), no segment
        st = self._shipping.setdefault(ref, _Shipping())
        b = self._backoff.get(ref)
        if self.now() - st.last < self.segment_interval or (b and b.next_try > self.now()):
            return
        # A fast writer is shipped in segments of at most SEGMENT_MAX bytes of frames, several
        # per pass, so memory stays bounded however much it wrote since the last pass.
        for _ in range(SEGMENTS_PER_PASS):
            if writer.size <= st.offset:
                break
            renderer = st.renderer.copy()  # commit the renderer's state once the segment is in
            text, offset, _ = await asyncio.to_thread(
                render_from, writer.path, st.offset, renderer, SEGMENT_MAX
            )
            if offset == st.offset:
                break
            if text:
                try:
                    await self.store.put_bytes(segment_key(ref, st.seq), text.encode())
                except (StoreUnavailable, ObjectMissing) as exc:  # 404 on a put: no bucket
                    self._failed(ref, exc, "segment")
                    return
                metrics.UPLOADS.labels("segment", "ok").inc()
                metrics.UPLOADED_BYTES.inc(len(text))
                st.seq += 1
            self._backoff.pop(ref, None)
            st.offset, st.renderer = offset, renderer
        st.last = self.now()

    def _sync(self, ref: LogRef) -> None:
        """The spool will wait for the store: make it durable first."""
        path = self.spool.ready.get(ref)
        if path is not None:
            self._sync_paths([path])

    async def _final(self, ref: LogRef, path: Path) -> bool:
        tmp = path.with_name(f".{path.name}.txt")  # same file system: the folder store moves it
        put_now = getattr(self.store, "put_file_now", None)
        try:
            if put_now is not None:  # a local folder: render, move and clean up in one hop
                size = await asyncio.to_thread(self._render_and_put, put_now, ref, path, tmp)
            elif (data := await asyncio.to_thread(render_small, path, SMALL_OBJECT)) is not None:
                # most logs are small: one PUT of bytes, no temporary file, no transfer manager
                size = len(data)
                await self.store.put_bytes(log_key(ref), data)
            else:
                size = await self._render_and_upload(ref, path, tmp)
            shipped = self._shipping.get(ref)
            # segments to clean up: some were shipped, or an earlier process may have shipped
            # some (a short attempt this process saw start and end has none: no listing)
            if (shipped is not None and shipped.seq) or ref in self._recovered:
                segments = await self.store.keys(segments_prefix(ref))
                if segments:
                    await self.store.delete(segments)
        except (StoreUnavailable, ObjectMissing) as exc:
            self._failed(ref, exc, "final")
            return False
        except FileNotFoundError:
            self.spool.ready.pop(ref, None)  # removed meanwhile
            return False
        metrics.UPLOADS.labels("final", "ok").inc()
        metrics.UPLOADED_BYTES.inc(size)
        self._backoff.pop(ref, None)
        self._shipping.pop(ref, None)
        self._recovered.discard(ref)
        self.spool.remove(ref)
        log.debug("log uploaded", log=ref.rel, bytes=size)
        self.uploaded.set()
        return True

    async def _put_pack(self, pack: Pack) -> None:
        """One PUT for a sealed pack; then its members' spools go. A failure keeps the bytes in
        memory (bounded by the packer) and the spools on disk (fsynced once), retried with
        backoff; the name and bytes are the same each time, so a retry after an unknown outcome
        is harmless."""
        body = pack.body()
        try:
            await self.store.put_bytes(pack.key, body)
        except (StoreUnavailable, ObjectMissing) as exc:
            b = self._pack_backoff.get(pack.name)
            if b is None:
                await asyncio.to_thread(
                    self._sync_paths, [self.spool.path(r) for r in pack.members]
                )
            delay = self.retry_min if b is None else min(b.delay * 2, self.retry_max)
            self._pack_backoff[pack.name] = _Backoff(delay, self.now() + delay)
            metrics.UPLOADS.labels("pack", "error").inc()
            log.warning(
                "log pack upload failed; will retry", pack=pack.key, retry_in=delay, error=str(exc)
            )
            return
        finally:
            self._putting.discard(pack.name)
        self._pack_backoff.pop(pack.name, None)
        assert self.packer is not None
        for ref in self.packer.written(pack):
            self.spool.remove(ref)
        metrics.UPLOADS.labels("pack", "ok").inc()
        metrics.PACKED_LOGS.inc(len(pack.members))
        metrics.UPLOADED_BYTES.inc(len(body))
        log.debug("log pack uploaded", pack=pack.key, logs=len(pack.members), bytes=len(body))
        self.uploaded.set()

    @staticmethod
    def _sync_paths(paths: list[Path]) -> None:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.warning("cannot fsync a spool", path=str(path), error=str(exc))

    async def _render_and_upload(self, ref: LogRef, path: Path, tmp: Path) -> int:
        """A big log: rendered to a temporary file, uploaded (multipart), the file removed."""
        try:
            size = await asyncio.to_thread(render_file, path, tmp)
            await self.store.put_file(log_key(ref), tmp)
        finally:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
        return size

    @staticmethod
    def _render_and_put(
        put_now: Callable[[str, Path], None], ref: LogRef, path: Path, tmp: Path
    ) -> int:
        try:
            size = render_file(path, tmp)
            put_now(log_key(ref), tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return size

    async def drain(self, within: float) -> None:
        """Try to upload what is left before the node stops (the rest waits for a restart)."""
        deadline = self.now() + within
        self._backoff.clear()
        self._pack_backoff.clear()
        self._draining = True  # every open pack is sealed and written now
        while self.now() < deadline and self.backlog:
            await self.pass_once()
            if self.backlog:
                await asyncio.sleep(min(0.5, max(0.0, deadline - self.now())))
