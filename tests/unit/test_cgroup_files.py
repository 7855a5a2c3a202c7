"""A reused cgroup's control files kept open (D404), with real cgroups and real processes: what is
read through a kept descriptor is what the kernel holds now, a run's process still lands in its
cgroup, the descriptors stay bounded over many runs and are all closed with the cgroup."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.executor import cgroup_files, cgroup_kill, cgroups, launch, workdir
from nodes.executor.cgroup_pool import CgroupPool
from nodes.executor.cgroups import Layout
from tests.launching import NO_LIMITS, cgroup_layout, start
from tests.unit.test_cgroups import SHAPES

BURN = 0.2  # seconds of CPU a test process burns in a cgroup
BURN_LOOP = f"t = time.process_time()\nwhile time.process_time() - t < {BURN}: pass"


@pytest.fixture(params=list(SHAPES))
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Layout]:
    yield from cgroup_layout(f"test-files-{request.param}", tmp_path, **SHAPES[request.param])


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _run(pool: CgroupPool, work: Path, i: int, command: str) -> tuple[str, int]:
    folder = workdir.run_dir(work, f"f{i}", 1)
    # held before its command: it is still there to be looked for
    proc, cg, _ = await start(command, folder=folder, pool=pool, armed=True)
    # the process is in every cgroup of the run (moved in through the kept cgroup.procs)
    members = {p: cgroup_kill.members_of(p) for p in cg.paths()}
    proc.release()
    status = await asyncio.wait_for(proc.wait(), 60)
    await launch.finish(pool, proc, folder, 65536)
    workdir.remove_run_dir(folder)
    assert all(proc.pid in found for found in members.values()), members
    return cg.name, status.exit_code if status.exit_code is not None else -1


async def test_kept_files_read_what_the_kernel_holds_and_stay_bounded(
    layout: Layout, tmp_path: Path
) -> None:
    base_kept, base_fds = cgroup_files.kept(), _open_fds()
    pool = CgroupPool(layout, size=2)
    names = set()
    after_warmup = 0
    for i in range(12):
        name, code = await _run(pool, tmp_path, i, "true")
        assert code == 0
        names.add(name)
        if i == 3:
            after_warmup = _open_fds()
    if pool.size:  # reused (the pool is off where memory.peak cannot be reset)
        assert len(names) == 1, str(pool.describe())
        assert cgroup_files.kept() > base_kept
    assert _open_fds() == after_warmup  # nothing more is kept per run
    pool.close()
    assert cgroup_files.kept() == base_kept  # every descriptor closed with its cgroup
    assert _open_fds() == base_fds


def test_counters_read_through_kept_descriptors_are_current(layout: Layout) -> None:
    """A counter read again through its kept descriptor is the kernel's value now: a process
    that burns CPU in the cgroup shows in the next read, and a second run's counters start at
    its own beginning; a process moved in through the kept cgroup.procs is in the cgroup."""
    cg = cgroups.RunCgroup(layout, "counters")
    cg.create(**NO_LIMITS)
    try:
        cg.begin()
        assert cg.usage().cpu_seconds in (0, None)
        for _ in range(2):  # the second time through the descriptors kept by the first
            burner = subprocess.Popen(
                # it burns only once moved in (stdin closed after the add): under load its start
                # could otherwise spend part of BURN outside the cgroup
                [sys.executable, "-c", f"import sys, time\nsys.stdin.read()\n{BURN_LOOP}"],
                stdin=subprocess.PIPE,
            )
            cg.add(burner.pid)
            assert all(burner.pid in cgroup_kill.members_of(p) for p in cg.paths())
            assert burner.stdin is not None
            burner.stdin.close()
            assert burner.wait(60) == 0
            used = cg.usage()
            assert used.cpu_seconds is None or used.cpu_seconds >= BURN * 0.9, used
            assert cg.empty()
            cg.end()
            cg.begin()
            assert cg.usage().cpu_seconds in (0, None, 0.0)
        assert len(cg.files) >= 1
    finally:
        assert cg.remove(timeout=2.0)
    assert len(cg.files) == 0


def test_the_budget_bounds_what_is_kept(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroup_files, "KEPT_FDS", cgroup_files.kept() + 1)
    a, b = cgroups.RunCgroup(layout, "budget-a"), cgroups.RunCgroup(layout, "budget-b")
    a.create(**NO_LIMITS)
    b.create(**NO_LIMITS)
    try:
        first = (a.usage(), b.usage())  # the second and later files: opened per use
        assert (a.usage(), b.usage()) == first
        assert len(a.files) + len(b.files) == 1
        assert cgroup_files.kept() == cgroup_files.KEPT_FDS
    finally:
        a.remove(timeout=2.0)
        b.remove(timeout=2.0)
    assert len(a.files) + len(b.files) == 0
