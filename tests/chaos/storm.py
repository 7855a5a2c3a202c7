"""What the kill storms share (leader kill, shard leader kill): a leader is killed only when
another node can take over, and a storm runs until it has made the kills it promised.

On a loaded 2-core machine (load 12-19, the CI's) a restarted ``cronmesh node`` takes ~20 s to
start, so a storm that killed a leader every 5 s regardless soon killed the last live node: the
next runs then waited for a restart, and the gap measured that start-up, not the fail-over the
bound is about (a 12.4 s gap against TTL + 2 s, D373). A storm now kills a leader only when
every other node is up and ready, and restarts the killed node once the fail-over created a run.
Waiting is a condition with a deadline; a node that never comes back still fails the scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from cluster.errors import Unavailable
from tests.chaos.checker import load_runs
from tests.chaos.harness import node_ready
from tests.chaos.scenario import Stage

STORM_EXTRA = 120.0  # how long a storm may go on past its duration to make its kills
STANDBY_TIMEOUT = 120.0  # a restart under load 19 took 20 s; a node that never comes back fails


async def standbys_ready(
    http: aiohttp.ClientSession, nodes: list[Any], leader: str, timeout: float = STANDBY_TIMEOUT
) -> None:
    """Wait until every node but ``leader`` is alive and answers ready (registered, its
    candidacy started), so the one that takes over has been up since the previous kill at
    least. One ready standby was not enough: the only one was the node restarted last, just
    registered, and on a loaded machine its first seconds (imports, caches, the first watches)
    made it take 3.8 s from winning the election to leading (a 7.3 s gap, load 19, D373).
    TimeoutError when they are not within ``timeout``: a node that never comes back fails."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = []
        for node in nodes:
            if node.node_id != leader and not (node.alive() and await node_ready(http, node.url)):
                waiting.append(node.node_id)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes {waiting} not ready within {timeout}s")
        await asyncio.sleep(0.2)


def storm_goes_on(now: float, end: float, kills: int, min_kills: int, hard_end: float) -> bool:
    """Does a storm go on at ``now`` (monotonic seconds)? Until ``end``, and past it until it
    has made ``min_kills`` kills (waiting for standbys costs it some: a kill every 25 s at load
    19), but never past ``hard_end``: the test's assertion on the kill count then says what
    happened."""
    return now < end or (kills < min_kills and now < hard_end)


async def failed_over(st: Stage, job: str, since: datetime, timeout: float = 60) -> bool:
    """Wait until ``job`` has a run created after ``since`` (the kill): the fail-over is over.
    The killed node is restarted only then: a node's start-up is seconds of CPU (~20 s of wall
    time at load 19), and started at once it competed with the new leader's election, load
    and first plan, the very window the gap bound measures (D373). False after ``timeout``
    (the checker's gap then says how long it took)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Unavailable):
            runs = await load_runs(st.etcd, st.keys, "default", job)
            if any(r.get("created_at") and _utc(r["created_at"]) > since for r in runs):
                return True
        await asyncio.sleep(0.2)
    return False


def _utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
