"""A job's output pipe, read without threads: non-blocking, through ``loop.add_reader``, each chunk
handed on as it arrives (on the loop thread) until end of file. The pipe is a bare descriptor
(no file object, D495), which the pipe owns and closes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

_READ_SIZE = 64 * 1024


class OutputPipe:
    """One non-blocking output pipe read through ``loop.add_reader``; it owns ``fd`` once made
    (a constructor that raises leaves it to the caller)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        name: str,
        fd: int,
        emit: Callable[[str, bytes], None],
    ) -> None:
        self.loop = loop
        self.name = name
        self.fd = fd
        self.closed = False
        self.emit = emit
        self.eof: asyncio.Future[None] = loop.create_future()
        self.watching = False
        os.set_blocking(self.fd, False)
        loop.add_reader(self.fd, self._on_readable)
        self.watching = True

    def _on_readable(self) -> None:
        self._read_once()

    def _read_once(self) -> bool:
        """Read one chunk; return False when nothing more is available right now."""
        if self.eof.done():
            return False
        try:
            data = os.read(self.fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            log.warning("error reading job output", stream=self.name, error=str(exc))
            data = b""
        if not data:
            self._unwatch()
            self.eof.set_result(None)
            return False
        self.emit(self.name, data)
        return True

    def drain_available(self) -> None:
        """Read whatever is already buffered in the pipe without waiting."""
        while self._read_once():
            pass

    def _unwatch(self) -> None:
        if self.watching:
            self.watching = False
            self.loop.remove_reader(self.fd)

    def close(self) -> None:
        self._unwatch()
        if not self.eof.done():
            self.eof.cancel()
        if not self.closed:  # once: the number may be another file's afterwards
            self.closed = True
            os.close(self.fd)
