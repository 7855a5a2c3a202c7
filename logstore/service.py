"""A node's logs: the spool, the store and the uploader, built from `LogSettings`."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog

from cluster.waiting import within as wait_within
from logstore.archive import archive_runs
from logstore.local import LocalFolderStore
from logstore.packs import Packer
from logstore.s3 import S3Credentials, S3Store
from logstore.settings import LogSettings
from logstore.spool import LogRef, Spool, SpoolWriter
from logstore.store import LogStore, log_key
from logstore.uploader import Uploader

log = structlog.get_logger(__name__)


def make_store(
    url: str | None,
    local_root: Path,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    credentials: S3Credentials | None = None,
) -> LogStore:
    """``s3://bucket/prefix``: S3; ``file:///path`` or a path: a folder; None: ``local_root``."""
    if url is None or url == "":
        return LocalFolderStore(local_root)
    if url.startswith("s3://"):
        return S3Store(url, endpoint=endpoint, region=region, credentials=credentials)
    if url.startswith("file://"):
        return LocalFolderStore(url[7:])
    return LocalFolderStore(url)


class Logs:
    def __init__(self, spool: Spool, store: LogStore, uploader: Uploader) -> None:
        self.spool = spool
        self.store = store
        self.uploader = uploader
        self._task: asyncio.Task[None] | None = None

    def open(self, ref: LogRef) -> SpoolWriter:
        return self.spool.open(ref)

    async def archive(self, project: str, job: str, records: dict[str, bytes]) -> str:
        return await archive_runs(self.store, project, job, records)

    def url(self, ref: LogRef) -> str:
        return self.store.url(log_key(ref))

    def placed(self, writer: SpoolWriter) -> str | None:
        """Where a just-closed attempt's log goes when it joins a pack (D440): the pack's URL
        with the range, for the run record; None: its own object, at `url`."""
        return self.uploader.pack(writer)

    def start(self) -> None:
        self.uploader.recover()
        self._task = asyncio.create_task(self.uploader.run(), name="log-uploader")

    async def stop(self, within: float) -> None:
        with contextlib.suppress(Exception):
            await wait_within(self.uploader.drain(within), within + 1)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # a cancel of stop() goes on
        self.store.close()
        left = self.uploader.backlog
        if left:
            log.warning("logs not uploaded yet; they go at the next start", count=left)


def build_logs(settings: LogSettings) -> Logs:
    spool = Spool(settings.spool_path, run_cap=settings.run_cap, disk_cap=settings.disk_cap)
    store = make_store(
        settings.store_url,
        settings.local_root,
        endpoint=settings.s3_endpoint,
        region=settings.s3_region,
        credentials=settings.s3_credentials,
    )
    # packs only where a PUT costs (S3); the folder store moves each rendered file into place
    packer = (
        Packer(settings.pack_window)
        if isinstance(store, S3Store) and settings.pack_window > 0
        else None
    )
    uploader = Uploader(spool, store, segment_interval=settings.segment_interval, packer=packer)
    return Logs(spool, store, uploader)
