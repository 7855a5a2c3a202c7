"""Where finished logs live: the ``LogStore`` interface and object names.

Each attempt's log is one text object at ``<prefix>/<project>/<job>/<run>/<attempt>.log``. While
the attempt runs, the uploader ships what is new every few seconds as numbered segments
``<attempt>.log.parts/<seq>``; their concatenation is a prefix of the final object, so a reader
can serve the log of a worker that crashed mid-run. Archived run records go to
``<prefix>/<project>/<job>/runs/<first_id>-<last_id>.jsonl``.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Protocol

from logstore.spool import LogRef


class ObjectMissing(Exception):
    """The object does not exist (yet)."""


class StoreUnavailable(Exception):
    """The store could not be reached or refused the call; try again later."""


class KeyOutsideStore(ValueError):
    """A key that would leave the store's root (or prefix): absolute, with ``.``/``..`` or empty
    segments, or with characters no key of ours has."""


def check_key(key: str, *, prefix: bool = False) -> str:
    """``key`` when it stays inside the store, else ``KeyOutsideStore`` (D160).

    A key is relative and normalized: no leading ``/``, no ``.``/``..``/empty segment, no NUL or
    backslash. With ``prefix`` a trailing ``/`` (and the empty prefix) is allowed. Checked by its
    spelling, which is what an object store (and a server that normalizes URLs) sees.
    """
    body = key[:-1] if prefix and key.endswith("/") else key
    if prefix and not body:
        return key
    if (
        not body
        or body.startswith("/")
        or "\x00" in body
        or "\\" in body
        or posixpath.normpath(body) != body
        or body == ".."
        or body.startswith("../")
    ):
        raise KeyOutsideStore(f"key {key!r} leaves the store")
    return key


def log_key(ref: LogRef) -> str:
    return f"{ref.rel}.log"


def segment_key(ref: LogRef, seq: int) -> str:
    return f"{ref.rel}.log.parts/{seq:08d}"


def segments_prefix(ref: LogRef) -> str:
    return f"{ref.rel}.log.parts/"


def archive_prefix(project: str, job: str | None = None) -> str:
    return f"{project}/{job}/runs/" if job else f"{project}/"


class LogStore(Protocol):
    """An object store for logs (a local folder, or an S3 bucket and prefix).

    Keys are relative (``project/job/run/attempt.log``); the store adds its own prefix. Every
    method is a coroutine that does its blocking I/O off the event loop. Failures to reach the
    store raise ``StoreUnavailable``; a missing object raises ``ObjectMissing``.
    """

    def url(self, key: str) -> str:
        """Where the object is, for people and tools (``s3://bucket/prefix/key``, ``file://…``)."""
        ...

    async def put_file(self, key: str, path: Path) -> None:
        """Upload a local file as the whole object (multipart for big files), replacing it.

        The file may be moved into place (the caller passes a file it no longer needs).
        """
        ...

    async def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object, replacing it."""
        ...

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive; None = to the end) without fetching the rest.

        A negative ``start`` with ``end=None`` reads the last ``-start`` bytes.
        """
        ...

    async def size(self, key: str) -> int:
        """The object's size in bytes."""
        ...

    async def keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted."""
        ...

    async def delete(self, keys: list[str]) -> None:
        """Delete objects; missing ones are ignored."""
        ...

    def close(self) -> None:
        """Release connections (the node is stopping); nothing else is called afterwards."""
        ...

    async def check(self) -> None:
        """Raise ``StoreUnavailable`` unless the store is reachable and writable."""
        ...
