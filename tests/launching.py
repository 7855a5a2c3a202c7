"""A command run the way the worker runs a contained run (``nodes.executor.launch``): in its own
folder, inside a cgroup of a pool, as this process's user, with no limit unless asked for; and the
cgroup layout the executor tests run on (skipped where this machine has no usable cgroups, every
run cgroup killed and removed at teardown)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodes.executor import cgroups, launch
from nodes.executor.cgroup_pool import CgroupPool
from nodes.executor.cgroups import Layout, RunCgroup
from nodes.executor.process import OutputCallback, Process

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
NO_LIMITS: dict[str, Any] = {"memory": None, "cpu": None, "pids": None}


def cgroup_layout(name: str, data: Path, **shape: Any) -> Iterator[Layout]:
    """For a fixture: the layout ``cgroups.detect`` finds for node ``name`` (``shape``: the
    hierarchies it may use); at teardown no run cgroup and no subtree of it is left."""
    found = cgroups.detect(name, str(data), **shape)
    if not found.enabled:
        pytest.skip(f"no usable cgroups here: {found.reason}")
    yield found
    cgroups.reap(found)
    cgroups.remove_subtree(found)
    assert not any(os.path.exists(p) for p in found.subtrees())


async def start(
    command: str,
    *,
    folder: Path,
    pool: CgroupPool,
    limits: dict[str, Any] | None = None,
    on_output: OutputCallback | None = None,
    armed: bool = False,
) -> tuple[Process, RunCgroup, list[str]]:
    """``/bin/sh -c command`` started by ``launch.start``: its process, its cgroup and the limits
    that could not be applied."""
    return await launch.start(
        ["/bin/sh", "-c", command],
        env=ENV,
        folder=folder,
        uid=None,
        gid=None,
        pool=pool,
        limits={**NO_LIMITS, **(limits or {})},
        on_output=on_output or (lambda stream, data: None),
        armed=armed,
    )


async def run_in(pool: CgroupPool, folder: Path, command: str) -> tuple[int, Process]:
    """``command`` run to its end in ``folder`` (private: 0700) inside a cgroup of ``pool``: its
    exit code and its process (for ``launch.finish``)."""
    proc, cg, missing = await start(command, folder=folder, pool=pool)
    assert missing == []
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert proc.cgroup is cg
    status = await proc.wait()
    assert status.exit_code is not None
    return status.exit_code, proc
