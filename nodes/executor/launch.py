"""A contained run's start and end in one hand-off each (docs/architecture.md D341).

Where the node has cgroups, a run used three hand-offs to the ``cgroup-io`` threads (its folder
and cgroup made; the spawned process moved in; usage read and cgroup removed), each ~20-40 µs of
CPU for the hand-off alone, plus the spawn on the loop. Now :func:`start` does, in one thread
call, what must happen before the job's first instruction: its private folder (D143), its cgroup
from the node's pool with its limits (D340), the spawn — held on its stdin (``armed_argv``), so
nothing of the job runs yet — and the move of the process into its cgroup; the loop then only
wraps the process (:class:`~nodes.executor.process.Process`: pidfd and pipes) and releases it
(at once, or at the due instant for an armed run). :func:`finish` is the other hand-off: the
run's usage, its cgroup given back to the pool (or removed), then — nothing of the run being
left — its folder kept for a next run when the job left it as it got it (D423), else removed when
empty (no result file to read then), else its result file read (D310).

The spawn is the same ``subprocess.Popen`` as on the loop (``vfork`` + ``exec``, no
``preexec_fn``, a new session, ``close_fds``; it lets the GIL go around the ``vfork``, D493), with
pipes the node makes and keeps as bare descriptors (:mod:`nodes.executor.child`, D495).
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from nodes.executor import spare_dirs, workdir
from nodes.executor.arming import armed_argv
from nodes.executor.cgroup_pool import CgroupPool
from nodes.executor.cgroups import RunCgroup, Usage, cgroup_io
from nodes.executor.child import Child, abandon, spawn
from nodes.executor.process import OutputCallback, Process

Read = tuple[bytes | None, str | None] | None  # a result file as read (workdir.read_result)
Spawned = tuple[Child, int, RunCgroup, list[str]]


def _spawn(
    argv: list[str],
    env: dict[str, str],
    folder: Path,
    uid: int | None,
    gid: int | None,
    pool: CgroupPool,
    limits: dict[str, Any],
    prefix: list[str] | None,
    umask: int,
) -> Spawned:
    """In a cgroup-io thread: folder, cgroup, the held process, moved in. Raises OSError when
    any cannot be made; nothing of the job has run then, and nothing of it is left."""
    if not spare_dirs.spares(folder.parent).take(folder, uid, gid):  # an emptied one (D423)
        workdir.make_run_dir(folder, uid, gid)
    cg, missing = pool.acquire(**limits)
    try:
        child = spawn(
            [*(prefix or ()), *armed_argv(argv)], env=env, cwd=str(folder), umask=umask, held=True
        )
    except BaseException:
        pool.release(cg)  # nothing was in it
        raise
    try:
        cg.add(child.pid)  # may wait for an RCU grace period (~10 ms, D150): off the loop
        pidfd = os.pidfd_open(child.pid)
    except BaseException:
        abandon(child)  # held: its command never ran
        cg.remove(timeout=0.5)
        raise
    return child, pidfd, cg, missing


def _discard(spawned: Spawned) -> None:
    """A spawn whose caller was cancelled meanwhile: the held process killed (every pipe the
    loop did not take closed), its cgroup gone."""
    child, pidfd, cg, _missing = spawned
    os.close(pidfd)
    abandon(child)
    cg.remove(timeout=0.5)


def _orphaned(fut: Future[Spawned]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        cgroup_io().submit(_discard, fut.result())


async def start(
    argv: list[str],
    *,
    env: dict[str, str],
    folder: Path,
    uid: int | None,
    gid: int | None,
    pool: CgroupPool,
    limits: dict[str, Any],
    on_output: OutputCallback,
    armed: bool = False,
    prefix: list[str] | None = None,
    umask: int = -1,
) -> tuple[Process, RunCgroup, list[str]]:
    """Start a contained run (one hand-off); returns its process, its cgroup and the limits
    that could not be applied. ``armed``: held until ``Process.release`` (D121). Raises
    OSError when it cannot be started."""
    loop = asyncio.get_running_loop()
    fut = cgroup_io().submit(_spawn, argv, env, folder, uid, gid, pool, limits, prefix, umask)
    try:
        spawned = await asyncio.wrap_future(fut)
    except asyncio.CancelledError:
        fut.add_done_callback(_orphaned)  # a thread that goes on: what it makes is undone
        raise
    child, pidfd, cg, missing = spawned
    try:
        proc = Process(child, pidfd, on_output, loop, cg)
    except BaseException:
        cgroup_io().submit(_discard, spawned)
        raise
    if not armed:
        proc.release()
    return proc, cg, missing


def _finish(
    pool: CgroupPool, cg: RunCgroup, folder: Path, limit: int
) -> tuple[Usage, bool, Read, bool]:
    usage, gone = pool.release(cg)
    if not gone:
        return usage, False, None, False
    if spare_dirs.spares(folder.parent).give_back(folder):  # left as it was given: kept (D423)
        return usage, True, (None, None), True
    try:
        os.rmdir(folder)  # the usual case: the job left nothing, so no result file either
    except OSError:  # not empty: its result file read, the rest removed by the caller
        return usage, True, workdir.read_result(folder / workdir.RESULT_NAME, limit), False
    return usage, True, (None, None), True


async def finish(
    pool: CgroupPool, proc: Process, folder: Path, limit: int
) -> tuple[Usage, bool, Read, bool]:
    """The end of a run whose process was waited for (one hand-off): what it used; whether
    nothing of it is left in its cgroup (kept for another run, or removed); then its result
    file as read, and whether its folder is gone. False: its cgroup could be neither emptied
    nor removed (reaped at the next start). The process forgets its cgroup first: a late
    signal to it (a cancel that arrives now) must not reach the next run in that cgroup."""
    cg, proc.cgroup = proc.cgroup, None
    assert cg is not None, "not a contained run"
    fut = cgroup_io().submit(_finish, pool, cg, folder, limit)
    try:
        return await asyncio.wrap_future(fut)
    except asyncio.CancelledError:
        if fut.cancelled():  # cancelled before a thread took it: the cgroup must still go
            cgroup_io().submit(_finish, pool, cg, folder, limit)
        raise
