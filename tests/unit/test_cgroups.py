"""nodes.executor.cgroups with real cgroups and real processes, in each shape this machine can take.

This machine class (and CI, as root) has a v2 hierarchy without controllers next to writable v1
hierarchies, so the three layouts are all real here: ``v2+v1`` (what a node detects), ``v1``
(freezer kill; v2 left out) and ``v2`` alone (cgroup.kill, no limits). Where the machine has no
writable cgroups the real-process tests are skipped (the fallback is tested by the executor's
own tests and by ``test_detect_without_cgroups``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.executor import cgroup_kill, cgroups
from nodes.executor.cgroups import Layout, RunCgroup
from nodes.executor.process import Process
from tests.launching import cgroup_layout

PY = sys.executable
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
SHAPES = {"auto": {}, "v1": {"want_v2": False}, "v2": {"want_v1": False}}


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def wait_gone(pids: list[int], within: float) -> list[int]:
    end = time.monotonic() + within
    while time.monotonic() < end:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.01)
    return [p for p in pids if alive(p)]


def read_pids(path: Path, count: int, within: float = 10.0) -> list[int]:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if path.exists():
            pids = [int(x) for x in path.read_text().split()]
            if len(pids) >= count:
                return pids
        time.sleep(0.01)
    raise AssertionError(f"{path} never listed {count} pids")


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Path]:
    """Where a job records its processes; what is left of them is killed at teardown (a failing
    test, or the mutation check's broken kill, must not leave `sleep 300`s behind)."""
    path = tmp_path / "pids"
    yield path
    with contextlib.suppress(OSError, ValueError):
        for pid in (int(x) for x in path.read_text().split()):
            if alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=list(SHAPES))
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Layout]:
    yield from cgroup_layout(f"test-{request.param}", tmp_path, **SHAPES[request.param])


def test_mounts_and_own_cgroups_are_parsed() -> None:
    mounts = (
        "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
        "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
    )
    unified, v1 = cgroups._mounts(mounts)
    assert unified == "/sys/fs/cgroup/unified"
    assert v1 == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory",
    }
    own, own_v1 = cgroups._own("4:memory:/pod/abc\n2:cpu,cpuacct:/\n1:name=systemd:/x\n0::/k8s\n")
    assert own == "/k8s" and own_v1 == {"memory": "/pod/abc", "cpu": "/", "cpuacct": "/"}


def test_detect_without_cgroups(tmp_path: Path) -> None:
    found = cgroups.detect("n", str(tmp_path), mounts="proc /proc proc rw 0 0\n", own="0::/\n")
    assert found.mode == "none" and not found.enabled
    assert "process-session kill" in found.reason
    assert found.describe()["kill"] == "process-session"


def test_subtree_is_named_by_node_and_data_folder(tmp_path: Path) -> None:
    a = cgroups.subtree_name("worker/1", str(tmp_path / "a"))
    assert a.startswith("cronmesh.worker_1.") and "/" not in a
    assert a != cgroups.subtree_name("worker/1", str(tmp_path / "b"))
    assert a == cgroups.subtree_name("worker/1", str(tmp_path / "a"))


def test_layout_round_trips_through_json(layout: Layout) -> None:
    again = Layout.from_json(layout.to_json())
    assert (again.mode, again.kill, again.v2, again.v1) == (
        layout.mode,
        layout.kill,
        layout.v2,
        layout.v1,
    )


async def _start(cg: RunCgroup, command: str) -> Process:
    return await Process.start(
        ["/bin/sh", "-c", command], env=ENV, cwd="/tmp", on_output=lambda s, d: None, cgroup=cg
    )


async def test_the_command_runs_inside_its_cgroup_from_the_start(
    layout: Layout, tmp_path: Path
) -> None:
    cg = RunCgroup(layout, "run-inside")
    assert cg.create(memory=None, cpu=None, pids=None) == []
    out = tmp_path / "cgroup"
    proc = await _start(cg, f"cat /proc/self/cgroup > {out}")
    assert (await proc.wait()).ok
    text = out.read_text()
    for path in cg.paths():
        assert path.rsplit("/", 2)[-2:] == [cg.layout.subtrees()[0].rsplit("/", 1)[-1], cg.name]
        assert f"/{cg.name}\n" in text
    assert cg.remove()
    assert cgroups.leftover_runs(layout) == []


async def test_setsid_and_double_fork_do_not_escape_a_kill(layout: Layout, pids: Path) -> None:
    cg = RunCgroup(layout, "run-escape")
    cg.create(memory=None, cpu=None, pids=None)
    # One grandchild leaves the session (setsid), one is double-forked to init, one is plain.
    proc = await _start(
        cg,
        f"setsid sh -c 'echo $$ >> {pids}; exec sleep 300' & "
        f"(sh -c 'echo $$ >> {pids}; exec sleep 301' &) ; "
        f"sh -c 'echo $$ >> {pids}; exec sleep 302' & wait",
    )
    escaped = read_pids(pids, 3)
    assert all(alive(p) for p in escaped)
    proc.kill()
    status = await asyncio.wait_for(proc.wait(), 10)
    assert status.signal == 9
    assert wait_gone(escaped, 2.0) == []
    assert cg.members() == []
    assert cg.remove()


async def test_leftovers_that_left_the_session_are_killed_after_a_normal_exit(
    layout: Layout, pids: Path
) -> None:
    cg = RunCgroup(layout, "run-leftover")
    cg.create(memory=None, cpu=None, pids=None)
    proc = await _start(cg, f"setsid sh -c 'echo $$ > {pids}; exec sleep 300' & sleep 0.2")
    status = await asyncio.wait_for(proc.wait(), 20)
    assert status.ok
    assert wait_gone(read_pids(pids, 1), 2.0) == []
    assert cg.remove()


async def test_memory_limit_ends_in_an_oom_kill_that_is_counted(layout: Layout) -> None:
    cg = RunCgroup(layout, "run-oom")
    if "memory" not in layout.limits:  # this shape cannot limit memory: it says so, runs anyway
        assert cg.create(memory=32 * 1024**2, cpu=None, pids=None) == ["memory"]
        assert cg.remove()
        return
    assert cg.create(memory=32 * 1024**2, cpu=None, pids=None) == []
    grab = "x = []\nwhile True: x.append(bytearray(4 << 20))\n"
    proc = await _start(cg, f"{PY} -c '{grab}'")
    status = await asyncio.wait_for(proc.wait(), 60)
    assert status.signal == 9 or (status.exit_code or 0) != 0
    usage = cg.usage()
    assert usage.oom_kills >= 1
    assert usage.peak_memory is not None and 16 * 1024**2 < usage.peak_memory <= 33 * 1024**2
    assert cg.remove()


async def test_pids_limit_stops_a_fork_bomb(layout: Layout) -> None:
    cg = RunCgroup(layout, "run-pids")
    if "pids" not in layout.limits:  # this shape cannot limit pids: it says so, runs anyway
        assert cg.create(memory=None, cpu=None, pids=8) == ["pids"]
        assert cg.remove()
        return
    assert cg.create(memory=None, cpu=None, pids=8) == []
    out: list[bytes] = []
    proc = await Process.start(
        ["/bin/sh", "-c", "n=0; for i in $(seq 40); do sleep 5 & n=$((n+1)); done; kill 0"],
        env=ENV,
        cwd="/tmp",
        on_output=lambda s, d: out.append(d),
        cgroup=cg,
    )
    await asyncio.wait_for(proc.wait(), 30)
    assert b"fork" in b"".join(out).lower()  # "Cannot fork" / "can't fork"
    assert cg.remove()


async def test_cpu_limit_and_cpu_time(layout: Layout) -> None:
    cg = RunCgroup(layout, "run-cpu")
    cpu = 0.2 if "cpu" in layout.limits else None
    assert cg.create(memory=None, cpu=cpu, pids=None) == []
    spin = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass\n"
    proc = await _start(cg, f"{PY} -c '{spin}'")
    assert (await asyncio.wait_for(proc.wait(), 30)).ok
    usage = cg.usage()
    assert usage.cpu_seconds is not None and usage.cpu_seconds > 0.02
    if cpu is not None:
        assert usage.cpu_seconds < 1.5 * 0.2 + 0.25  # throttled to a fifth of a core
    assert cg.remove()


def test_limits_a_shape_cannot_apply_are_returned(layout: Layout) -> None:
    cg = RunCgroup(layout, "run-missing")
    missing = cg.create(memory=64 * 1024**2, cpu=0.5, pids=10)
    assert sorted(missing) == sorted(set(cgroups.LIMITS) - set(layout.limits))
    assert cg.remove()


async def test_reap_kills_and_removes_what_a_previous_incarnation_left(
    layout: Layout, pids: Path
) -> None:
    cg = RunCgroup(layout, "run-left-behind")
    cg.create(memory=None, cpu=None, pids=None)
    proc = await _start(cg, f"setsid sh -c 'echo $$ > {pids}; exec sleep 300' & wait")
    left = read_pids(pids, 1)
    assert cgroups.leftover_runs(layout) == ["run-left-behind"]
    assert cgroups.reap(layout) == ["run-left-behind"]
    assert wait_gone(left, 2.0) == []
    await asyncio.wait_for(proc.wait(), 10)
    assert cgroups.leftover_runs(layout) == []


def test_killing_a_cgroup_that_is_already_gone_is_not_an_error(tmp_path: Path) -> None:
    # The fence may kill and remove a run's cgroup before the node's own kill reaches it (a
    # self-fenced node closing its worker): that kill finds nothing left to kill.
    cgroup_kill.kill_v2(str(tmp_path / "removed-meanwhile"))
