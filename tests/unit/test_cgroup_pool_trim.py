"""Idle run cgroups are given back after a peak (D487), with real cgroups and an injected clock:
a set unused for a minute goes, a few a turn, the oldest first; what the last minute used at
once stays, so steady use makes none again."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.executor.cgroup_pool import CgroupPool
from nodes.executor.cgroups import Layout, RunCgroup
from nodes.executor.containment import Containment
from tests.conftest import wait_for
from tests.launching import NO_LIMITS, cgroup_layout


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    yield from cgroup_layout("test-trim", tmp_path)


def present(cg: RunCgroup) -> bool:
    return any(os.path.exists(p) for p in cg.paths())


def use(pool: CgroupPool, n: int) -> list[RunCgroup]:
    """``n`` sets taken at once, then all given back (runs with no process: nothing to wait)."""
    held = [pool.acquire(**NO_LIMITS)[0] for _ in range(n)]
    for cg in held:
        assert pool.release(cg)[1]
    return held


def test_after_a_peak_the_pool_shrinks_to_what_the_last_minute_used_at_once(
    layout: Layout,
) -> None:
    now = [0.0]
    pool = CgroupPool(layout, size=12, clock=lambda: now[0])
    if pool.size == 0:
        pytest.skip(pool.reason)
    peak = use(pool, 12)  # a peak at 0 s: 12 at once, all kept
    assert pool.idle() == 12 and pool.made == 12
    given = []
    for second in range(1, 151):  # then 3 at once every second, 6 every 20th
        now[0] = float(second)
        use(pool, 6 if second % 20 == 0 else 3)
        given.append(pool.trim(most=4))
        if second < 60:
            assert not pool.stale()
    # nothing before a minute; then at most 4 a turn, the 6 the peak alone used
    assert given[:59] == [0] * 59 and given[59:61] == [4, 2] and sum(given) == 6
    assert pool.trimmed == 6 and pool.idle() == 6 and not pool.stale()
    # the oldest went: kept first, never reached again (taken newest first)
    assert [present(cg) for cg in peak] == [False] * 6 + [True] * 6
    assert pool.made == 12  # steady use never made a set again
    now[0] += 60  # a quiet minute: the rest goes too
    while pool.trim(most=4):
        pass
    assert pool.idle() == 0 and pool.trimmed == 12 and not any(present(cg) for cg in peak)
    pool.close()


async def test_a_node_s_containment_gives_idle_sets_back_about_once_a_second(
    tmp_path: Path,
) -> None:
    c = Containment("test-trim-node", str(tmp_path))
    c.start()
    try:
        if c.pool is None or c.pool.size == 0:
            pytest.skip(c.layout.reason or (c.pool.reason if c.pool else "no pool"))
        pool = c.pool
        later = [0.0]
        pool.clock = lambda: time.monotonic() + later[0]
        kept = use(pool, 3)
        tending = asyncio.create_task(c.tend())
        try:
            later[0] = 61.0  # a minute later: none of the 3 was used since
            await wait_for(lambda: pool.idle() == 0, 10, 0.05, "the 3 idle sets given back")
        finally:
            tending.cancel()
            await asyncio.gather(tending, return_exceptions=True)
        assert pool.trimmed == 3 and not any(present(cg) for cg in kept)
    finally:
        c.close()
