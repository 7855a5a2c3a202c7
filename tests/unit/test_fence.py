"""The fence process (nodes.executor.fence) driven through the node's client (nodes.executor.containment), with real
processes: it kills a node's runs when the node goes (end of file) and when the lease deadline
it was told passes without a renewal (self-fencing); in cgroups and in the session fallback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.executor.containment import Containment
from nodes.executor.process import Process
from tests.unit.test_cgroups import ENV, alive, read_pids, wait_gone


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Path]:
    """Where the job records its processes; what is left of them is killed at teardown."""
    path = tmp_path / "pids"
    yield path
    with contextlib.suppress(OSError, ValueError):
        for pid in (int(x) for x in path.read_text().split()):
            if alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=["cgroups", "sessions"])
def held(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Containment]:
    c = Containment(f"fence-{request.param}", str(tmp_path), use_cgroups=request.param == "cgroups")
    c.start()
    if request.param == "cgroups" and not c.layout.enabled:
        c.close()
        pytest.skip(f"no usable cgroups here: {c.layout.reason}")
    assert c.fence_pid is not None and alive(c.fence_pid)
    yield c
    c.close()


async def _job(held: Containment, name: str, pids: Path) -> Process:
    """A run whose one process leaves its session: only a cgroup or the fence can find it."""
    cg = held.run_cgroup(name, 1)
    if cg is not None:
        cg.create(memory=None, cpu=None, pids=None)
    proc = await Process.start(
        ["/bin/sh", "-c", f"sh -c 'echo $$ >> {pids}; exec sleep 300' & echo $$ >> {pids}; wait"],
        env=ENV,
        cwd="/tmp",
        on_output=lambda s, d: None,
        cgroup=cg,
    )
    held.watch_session(proc.pid)
    return proc


async def test_end_of_file_kills_every_run_within_a_second(held: Containment, pids: Path) -> None:
    proc = await _job(held, "eof", pids)
    members = read_pids(pids, 2)
    fence = held.fence_pid
    assert fence is not None
    t0 = time.monotonic()
    held.close()  # what the node's death does: the fence's pipe reaches end of file
    assert wait_gone(members, 1.0) == [], "a run outlived its node by more than a second"
    took = time.monotonic() - t0
    await asyncio.wait_for(proc.wait(), 10)
    assert wait_gone([fence], 5.0) == []
    assert took < 1.0


async def test_a_lease_deadline_without_renewal_kills_the_runs_at_that_instant(
    held: Containment, pids: Path
) -> None:
    proc = await _job(held, "deadline", pids)
    members = read_pids(pids, 2)
    deadline = time.monotonic() + 1.0
    held.valid_until(deadline)
    await asyncio.sleep(0.6)
    assert all(alive(p) for p in members), "killed before the deadline"
    gone_by = deadline + 1.0
    while any(alive(p) for p in members) and time.monotonic() < gone_by:
        await asyncio.sleep(0.01)
    assert not any(alive(p) for p in members), "still alive a second after the deadline"
    assert time.monotonic() >= deadline
    await asyncio.wait_for(proc.wait(), 10)
    assert alive(held.fence_pid or 0), "the fence goes on after fencing"


async def test_renewals_keep_the_runs_alive(held: Containment, pids: Path) -> None:
    proc = await _job(held, "renewed", pids)
    members = read_pids(pids, 2)
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        held.valid_until(time.monotonic() + 0.4)
        await asyncio.sleep(0.1)
    assert all(alive(p) for p in members)
    held.valid_until(None)  # no deadline at all
    await asyncio.sleep(0.6)
    assert all(alive(p) for p in members)
    proc.kill()
    await asyncio.wait_for(proc.wait(), 10)
    assert wait_gone(members, 2.0) == []


async def test_a_dead_fence_is_restarted_with_the_current_deadline(
    held: Containment, pids: Path
) -> None:
    first = held.fence_pid
    assert first is not None
    held.valid_until(time.monotonic() + 30)
    watcher = asyncio.create_task(held.tend())
    try:
        os.kill(first, signal.SIGKILL)
        end = time.monotonic() + 10
        while (held.fence_pid == first or held.fence_pid is None) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        assert held.fence_pid not in (first, None) and held.fence_restarts == 1
        valid_for = held.status()["fence"]["valid_for"]  # type: ignore[index]
        assert 20 < valid_for <= 30
        await _job(held, "after-restart", pids)
        members = read_pids(pids, 2)
        held.close()
        assert wait_gone(members, 1.0) == []
    finally:
        watcher.cancel()
