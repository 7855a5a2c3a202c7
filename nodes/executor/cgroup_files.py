"""A run cgroup's control files, kept open while the cgroup lives (docs/architecture.md D404).

A pooled cgroup (D340) serves run after run, and each run opened and closed the same files again:
``cgroup.procs`` of each hierarchy to move the process in, the memory peak's reset, the counters
read at the end (``cpu.stat``, ``memory.oom_control`` / ``memory.events``, the memory peak) and
``memory.current``: ~7 opens per run in the ``cgroup-io`` threads, each open and close another
release and re-take of the GIL that the busy event loop holds. Kept open, a counter's read is one
``pread`` at offset 0 (the kernel renders the file afresh when read again from the start) and a
write one ``write``; a file written and read has a descriptor for each. Not kept: the reads of
``cgroup.procs`` that say a cgroup is empty before another run gets it (read again through a kept
descriptor, the list was not the kernel's current one: a test found every reused cgroup dropped).

At most ``KEPT_FDS`` descriptors are kept per process, whatever the number of cgroups; beyond,
files are opened and closed per use as before. A cgroup's files are closed when it is removed,
or when one of its hierarchies is (``forget``). Only the standard library is used, as in
:mod:`nodes.executor.cgroups`.
"""

from __future__ import annotations

import os
import threading

from nodes.executor.cgroup_layout import _read, _write

KEPT_FDS = 1024  # per node process; counted in the node's open-files limit (capacity.py)
_CHUNK = 65536  # a read shorter than this was the whole file: no second read to find its end
_kept = 0
_lock = threading.Lock()


def kept() -> int:
    """Descriptors kept open now, over every cgroup of this process."""
    return _kept


def _take() -> bool:
    global _kept
    with _lock:
        if _kept >= KEPT_FDS:
            return False
        _kept += 1
        return True


def _give(n: int) -> None:
    global _kept
    with _lock:
        _kept -= n


class KeptFiles:
    """The open control files of one run cgroup, by path. Used by one thread at a time (the
    run's start, then its end: handed over through the cgroup-io pool's futures)."""

    __slots__ = ("_fds",)

    def __init__(self) -> None:
        self._fds: dict[tuple[str, int], int] = {}

    def _fd(self, path: str, flags: int) -> int | None:
        fd = self._fds.get((path, flags))
        if fd is not None or not _take():
            return fd
        try:
            fd = os.open(path, flags | os.O_CLOEXEC)
        except OSError:
            _give(1)
            raise
        self._fds[path, flags] = fd
        return fd

    def read(self, path: str) -> str:
        """The text of a counter file (a list file such as ``cgroup.procs`` is read afresh by
        the caller: see the module's doc)."""
        fd = self._fd(path, os.O_RDONLY)
        if fd is None:
            return _read(path)
        data = os.pread(fd, _CHUNK, 0)
        if len(data) < _CHUNK:  # the whole file (a counter file is a few hundred bytes)
            return data.decode()
        chunks = [data]
        while chunk := os.pread(fd, _CHUNK, sum(map(len, chunks))):
            chunks.append(chunk)
        return b"".join(chunks).decode()

    def write(self, path: str, value: str) -> None:
        fd = self._fd(path, os.O_WRONLY)  # never the descriptor reads go through
        if fd is None:
            _write(path, value)
        else:
            os.write(fd, value.encode())

    def forget(self, folder: str) -> None:
        """Close the files under ``folder`` (a hierarchy of the cgroup, removed)."""
        prefix = folder.rstrip("/") + "/"
        self._close([k for k in self._fds if k[0].startswith(prefix)])

    def close(self) -> None:
        self._close(list(self._fds))

    def _close(self, keys: list[tuple[str, int]]) -> None:
        for key in keys:
            fd = self._fds.pop(key)
            try:
                os.close(fd)
            finally:
                _give(1)

    def __len__(self) -> int:
        return len(self._fds)
