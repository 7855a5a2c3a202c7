"""A run's folder made with its cgroup, and removed (its result read) with it, off the event loop
(D310): ``workdir.prepare_attempt`` and ``Executing._finish_cgroup``, with real cgroups and real
processes where this machine has writable cgroups (it has, as root, and so has CI)."""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.executor import cgroups, workdir
from nodes.executor.cgroups import Layout, RunCgroup
from nodes.executor.process import Process
from nodes.worker.executing import Executing

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    found = cgroups.detect("test-attempt-io", str(tmp_path / "data"))
    if not found.enabled:
        pytest.skip(f"no usable cgroups here: {found.reason}")
    yield found
    cgroups.reap(found)
    cgroups.remove_subtree(found)


def present(cg: RunCgroup) -> int:
    """How many of the run's cgroups exist."""
    return sum(Path(p).is_dir() for p in cg.paths())


async def run_in(folder: Path, cg: RunCgroup, command: str) -> int:
    proc = await Process.start(
        ["/bin/sh", "-c", command],
        env=ENV,
        cwd=str(folder),
        on_output=lambda stream, data: None,
        cgroup=cg,
    )
    status = await proc.wait()
    assert status.exit_code is not None
    return status.exit_code


async def test_folder_and_cgroup_made_together_then_result_read_and_both_removed(
    layout: Layout, tmp_path: Path
) -> None:
    folder = workdir.run_dir(tmp_path, "r1", 1)
    cg = RunCgroup(layout, "run-r1-1")
    missing = workdir.prepare_attempt(folder, None, None, cg, memory=None, cpu=None, pids=None)
    assert missing == []
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert present(cg) == len(cg.paths())
    # the job runs in its folder, inside its cgroup, and leaves a result there
    code = await run_in(
        folder,
        cg,
        f'grep -q "{cg.name}" /proc/self/cgroup && echo \'{{"rows": 3}}\' > {workdir.RESULT_NAME}',
    )
    assert code == 0
    usage, removed, read, gone = Executing._finish_cgroup(cg, folder)
    assert removed and present(cg) == 0
    assert read == (b'{"rows": 3}\n', None)
    assert usage.cpu_seconds is not None
    # the result file was read first, so the folder was not empty: the caller removes the rest
    assert folder.exists() and not gone
    workdir.remove_run_dir(folder)
    assert not folder.exists()


async def test_an_empty_folder_goes_with_the_cgroup(layout: Layout, tmp_path: Path) -> None:
    folder = workdir.run_dir(tmp_path, "r2", 1)
    cg = RunCgroup(layout, "run-r2-1")
    workdir.prepare_attempt(folder, None, None, cg, memory=None, cpu=None, pids=None)
    assert await run_in(folder, cg, "true") == 0
    _usage, removed, read, gone = Executing._finish_cgroup(cg, folder)
    assert removed and read == (None, None) and not folder.exists()


async def test_a_result_that_is_a_symlink_is_still_refused(layout: Layout, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text('{"stolen": true}')
    folder = workdir.run_dir(tmp_path, "r3", 1)
    cg = RunCgroup(layout, "run-r3-1")
    workdir.prepare_attempt(folder, None, None, cg, memory=None, cpu=None, pids=None)
    assert await run_in(folder, cg, f"ln -s {secret} {workdir.RESULT_NAME}") == 0
    _usage, removed, read, gone = Executing._finish_cgroup(cg, folder)
    assert removed and read is not None and read[0] is None
    assert "symbolic link" in (read[1] or "")


def test_a_cgroup_that_cannot_be_made_raises_and_the_run_never_starts(
    layout: Layout, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    broken = dataclasses.replace(layout, v2=str(blocker), v1={})
    folder = workdir.run_dir(tmp_path, "r4", 1)
    with pytest.raises(OSError):
        workdir.prepare_attempt(
            folder, None, None, RunCgroup(broken, "run-r4-1"), memory=None, cpu=None, pids=None
        )
    assert folder.is_dir()  # made first; the worker's clean-up removes it (it is empty)
    workdir.remove_run_dir(folder)
