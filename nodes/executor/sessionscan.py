"""Find the processes of job sessions with shared, off-loop scans of ``/proc`` (Linux only).

Linux has no cheap way to list the members of a session: the only way is to read
``/proc/<pid>/stat`` of every process on the machine (~2.5 ms with 100 processes, ~8 ms with
300). The executor looks for leftovers after every job process exits; doing that scan on the
event loop, once per exit, stalls the loop for seconds when a few hundred jobs end together
(a DAG fan-out), long enough to lose a lease.

:class:`SessionScanner` coalesces those lookups: every session asked for while a scan is
running is served by the *next* scan, a single pass over ``/proc`` that answers for all of them,
and the pass runs in a thread of its own (its ``open``/``read`` calls release the GIL). A request is
only ever answered by a scan that started after it was made, so a scan never reports an answer
older than the question (the guarantee of the per-exit scan is kept).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor

__all__ = ["SessionScanner", "parse_stat", "scan_sessions", "scanner", "session_members"]


def parse_stat(data: bytes) -> tuple[bytes, int] | None:
    """Return (state, session id) from the contents of a ``/proc/<pid>/stat`` file.

    ``comm`` (field 2) is in parentheses and may itself contain spaces and parentheses, so the
    line is split after the LAST ``)``.
    """
    end = data.rfind(b")")
    if end < 0:
        return None
    fields = data[end + 1 :].split()
    # fields[0] = state (3), [1] = ppid (4), [2] = pgrp (5), [3] = session (6)
    if len(fields) < 4:
        return None
    try:
        return fields[0], int(fields[3])
    except ValueError:
        return None


def scan_sessions(sids: Collection[int], *, include_zombies: bool = False) -> dict[int, list[int]]:
    """One pass over ``/proc``: the pids of the processes of each session in ``sids``.

    Zombies are left out unless ``include_zombies``. Sessions without members are absent.
    """
    found: dict[int, list[int]] = {}
    if not sids:
        return found
    wanted = frozenset(sids)
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
        except OSError:  # vanished, or hidden
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            continue
        finally:
            os.close(fd)
        parsed = parse_stat(data)
        if parsed is None:
            continue
        state, session = parsed
        if session not in wanted:
            continue
        if not include_zombies and state in (b"Z", b"X"):
            continue
        found.setdefault(session, []).append(int(name))
    return found


def session_members(sid: int, *, include_zombies: bool = False) -> list[int]:
    """Pids of the processes whose session id is ``sid`` (zombies left out by default)."""
    return scan_sessions((sid,), include_zombies=include_zombies).get(sid, [])


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """A thread of its own: the default executor may be busy (password hashing, SMTP)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cronmesh-procscan")
    return _POOL


class SessionScanner:
    """Coalesces session lookups of one event loop into shared scans run in a thread."""

    def __init__(
        self, scan: Callable[[tuple[int, ...]], dict[int, list[int]]] = scan_sessions
    ) -> None:
        self._scan = scan
        self.scans = 0
        """Number of passes over ``/proc`` done so far (for tests and benchmarks)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, asyncio.Future[list[int]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def members(self, sid: int) -> list[int]:
        """Pids of the live (non-zombie) processes of session ``sid``, from a fresh scan."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop (tests): drop the old state
            self._loop = loop
            self._pending = {}
            self._task = None
        fut = self._pending.get(sid)
        if fut is None:
            fut = loop.create_future()
            self._pending[sid] = fut
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(loop))
        # shield: one caller giving up must not cancel the answer other callers share
        return list(await asyncio.shield(fut))

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                found = await loop.run_in_executor(_pool(), self._scan, tuple(batch))
            except asyncio.CancelledError:  # the loop is going away: so are the callers
                for fut in [*batch.values(), *self._pending.values()]:
                    fut.cancel()
                self._pending = {}
                raise
            except Exception as exc:  # never expected (OSError is handled in the scan)
                for fut in batch.values():
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.scans += 1
            for sid, fut in batch.items():
                if not fut.done():
                    fut.set_result(found.get(sid, []))


_SCANNER = SessionScanner()


def scanner() -> SessionScanner:
    """The process-wide scanner (it follows the running event loop)."""
    return _SCANNER
