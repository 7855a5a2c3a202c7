"""A run's folder, cgroup and process made in one hand-off, and its cgroup given back, result
read and folder removed in another, off the event loop (D310, D341): ``launch.start`` and
``launch.finish``, with real cgroups and real processes where this machine has writable cgroups
(it has, as root, and so has CI)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.executor import cgroups, launch, workdir
from nodes.executor.cgroup_pool import CgroupPool
from nodes.executor.cgroups import Layout, RunCgroup
from tests.launching import cgroup_layout, run_in, start


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    yield from cgroup_layout("test-attempt-io", tmp_path / "data")


def present(cg: RunCgroup) -> int:
    """How many of the run's cgroups exist."""
    return sum(Path(p).is_dir() for p in cg.paths())


async def test_folder_and_cgroup_made_together_then_result_read_and_both_removed(
    layout: Layout, tmp_path: Path
) -> None:
    pool = CgroupPool(layout, size=0)  # nothing kept: the cgroup is removed
    folder = workdir.run_dir(tmp_path, "r1", 1)
    # the job runs in its folder, inside its cgroup, and leaves a result there
    code, proc = await run_in(
        pool,
        folder,
        'grep -q "/cg-" /proc/self/cgroup && echo \'{"rows": 3}\' > ' + workdir.RESULT_NAME,
    )
    assert code == 0
    cg = proc.cgroup
    assert cg is not None
    usage, removed, read, gone = await launch.finish(pool, proc, folder, 65536)
    assert removed and present(cg) == 0
    assert read == (b'{"rows": 3}\n', None)
    assert usage.cpu_seconds is not None
    # the result file was read first, so the folder was not empty: the caller removes the rest
    assert folder.exists() and not gone
    workdir.remove_run_dir(folder)
    assert not folder.exists()


async def test_an_empty_folder_goes_with_the_cgroup(layout: Layout, tmp_path: Path) -> None:
    pool = CgroupPool(layout)
    folder = workdir.run_dir(tmp_path, "r2", 1)
    code, proc = await run_in(pool, folder, "true")
    assert code == 0
    cg = proc.cgroup
    assert cg is not None
    _usage, removed, read, gone = await launch.finish(pool, proc, folder, 65536)
    assert proc.cgroup is None  # a late signal to it reaches nothing of the next run
    assert removed and read == (None, None) and gone and not folder.exists()
    assert pool.idle() == 1 and present(cg) == len(cg.paths())  # kept for the next run
    pool.close()
    assert present(cg) == 0


async def test_a_result_that_is_a_symlink_is_still_refused(layout: Layout, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text('{"stolen": true}')
    pool = CgroupPool(layout)
    folder = workdir.run_dir(tmp_path, "r3", 1)
    code, proc = await run_in(pool, folder, f"ln -s {secret} {workdir.RESULT_NAME}")
    assert code == 0
    _usage, removed, read, gone = await launch.finish(pool, proc, folder, 65536)
    assert removed and read is not None and read[0] is None
    assert "symbolic link" in (read[1] or "")
    pool.close()


async def test_a_cgroup_that_cannot_be_made_raises_and_the_run_never_starts(
    layout: Layout, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    broken = dataclasses.replace(layout, v2=str(blocker), v1={})
    folder = workdir.run_dir(tmp_path, "r4", 1)
    started = tmp_path / "started"
    with pytest.raises(OSError):
        await start(f"touch {started}", folder=folder, pool=CgroupPool(broken))
    assert not started.exists()
    assert folder.is_dir()  # made first; the worker's clean-up removes it (it is empty)
    workdir.remove_run_dir(folder)


async def test_a_start_cancelled_meanwhile_leaves_no_process_and_no_cgroup(
    layout: Layout, tmp_path: Path
) -> None:
    pool = CgroupPool(layout)
    cancelled: list[Path] = []
    loop = asyncio.get_running_loop()
    for i in range(4):  # cancelled at once (even) or once its thread is at work (odd)
        folder = workdir.run_dir(tmp_path, "r5", i + 1)
        started = tmp_path / f"started-{i}"
        task = asyncio.create_task(start(f"touch {started}", folder=folder, pool=pool))
        deadline = loop.time() + 10
        while i % 2 and not await asyncio.to_thread(folder.exists) and loop.time() < deadline:
            await asyncio.sleep(0.001)  # the thread made the folder: it is spawning
        task.cancel()
        try:
            proc, _cg, _missing = await task
        except asyncio.CancelledError:
            cancelled.append(started)
        else:  # it was done before the cancel came: an ordinary run, ended as usual
            await proc.wait()
            await launch.finish(pool, proc, folder, 65536)
    assert pool.made >= 1 and cancelled  # some were cancelled while their thread was at work
    # the thread's spawn is undone when it arrives: the held process killed, its cgroup gone
    # (only the cgroups of runs that ended as usual are left, kept in the pool)
    deadline = loop.time() + 10
    while len(cgroups.leftover_runs(layout)) > pool.idle() and loop.time() < deadline:
        await asyncio.sleep(0.02)
    assert len(cgroups.leftover_runs(layout)) == pool.idle()
    assert not any(p.exists() for p in cancelled)  # a held command never ran
    pool.close()


async def test_an_end_cancelled_meanwhile_still_gives_the_cgroup_back(
    layout: Layout, tmp_path: Path
) -> None:
    pool = CgroupPool(layout)
    for i in range(3):  # cancelled before its thread starts, and while it runs
        folder = workdir.run_dir(tmp_path, "r6", i + 1)
        code, proc = await run_in(pool, folder, "true")
        assert code == 0
        task = asyncio.create_task(launch.finish(pool, proc, folder, 65536))
        for _ in range(i + 1):  # it started (as an awaited call always has), then cancelled
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert proc.cgroup is None
    # every cgroup goes back to the pool (or away): none is left held by nobody
    deadline = asyncio.get_running_loop().time() + 10
    while (
        len(cgroups.leftover_runs(layout)) > pool.idle()
        and asyncio.get_running_loop().time() < deadline
    ):
        await asyncio.sleep(0.02)
    assert len(cgroups.leftover_runs(layout)) == pool.idle() >= 1
    pool.close()
