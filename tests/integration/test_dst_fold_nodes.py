"""A fall-back transition happening NOW, on real `cronmesh node` processes (D220).

A tiny TZif zone is written for the test: its clocks go back 30 seconds, 20 seconds from now, so
the wall times of those 30 seconds occur twice. Three jobs at one such wall time (a fixed second,
minute and hour) with ``fold: both``, ``fold: first`` and the default fire 2, 1 and 1 runs, and
never more — also when the leader is killed (SIGKILL) between the two occurrences, so the new
leader must fire the second occurrence once and must not fire the first again."""

from __future__ import annotations

import signal
import struct
import time
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.chaos.harness import leader_of, wait_ready
from tests.conftest import api_session, wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"
ZONE = "Cronmesh/FoldTest"
FOLD = 30  # seconds the clocks go back


def tzif(change_at: int, before: int, after: int) -> bytes:
    """A version-1 TZif file: offset ``before`` (seconds east of UTC) until the Unix time
    ``change_at``, then ``after``. Both types are standard time, so Python's reader takes the
    first one for the times before the transition."""
    abbrs = b"FTA\0FTB\0"
    header = b"TZif" + b"\0" * 16 + struct.pack(">6l", 0, 0, 0, 1, 2, len(abbrs))
    body = struct.pack(">lB", change_at, 1) + struct.pack(">lBBlBB", before, 0, 0, after, 0, 4)
    return header + body + abbrs


async def runs_of(http, node, job: str) -> list[str]:
    async with http.get(f"{node.url}{RUNS}?job={job}&limit=50") as resp:
        if resp.status != 200:
            return []
        body = await resp.json()
    return sorted(
        datetime.fromisoformat(r["scheduled_at"]).astimezone(UTC).isoformat() for r in body["runs"]
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_fold_hour_now_on_real_nodes_with_a_leader_kill(procs, tmp_path: Path):
    zones = tmp_path / "zoneinfo"
    (zones / "Cronmesh").mkdir(parents=True)
    tzpath = ":".join([str(zones), *zoneinfo.TZPATH])
    env = {"PYTHONTZPATH": tzpath}
    nodes = [procs.start(f"fold-{i}", lease_ttl=3, env=env) for i in range(2)]
    async with api_session() as http:
        for n in nodes:
            await wait_ready(http, n)
        # No process has read the zone yet: write it now, its transition 20 s from now.
        change_at = int(time.time()) + 20
        (zones / "Cronmesh" / "FoldTest").write_bytes(tzif(change_at, FOLD, 0))
        change = datetime.fromtimestamp(change_at, UTC)
        first = change - timedelta(seconds=10)  # wall time W (the 20th second of the fold)...
        second = change + timedelta(seconds=20)  # ...and W again, after the clocks went back
        wall = (first + timedelta(seconds=FOLD)).replace(tzinfo=None)
        with open(zones / "Cronmesh" / "FoldTest", "rb") as f:
            tz = zoneinfo.ZoneInfo.from_file(f)
        assert first.astimezone(tz).replace(tzinfo=None) == wall
        assert second.astimezone(tz).replace(tzinfo=None) == wall
        assert second.astimezone(tz).fold == 1
        cron = f"{wall.second} {wall.minute} {wall.hour} {wall.day} {wall.month} *"
        for name, dst in (("both", {"fold": "both"}), ("first", {"fold": "first"}), ("auto", None)):
            job = {
                "command": "true",
                "schedules": [{"cron": cron, "timezone": ZONE, "dst": dst}],
            }
            async with http.put(f"{nodes[0].url}{JOBS}/{name}", json=job) as resp:
                assert resp.status == 201, await resp.text()
        assert datetime.now(UTC) < first - timedelta(seconds=3), "too slow to set up"

        expected_first = first.isoformat()
        await wait_for(
            lambda: _has(http, nodes[0], "both", [expected_first]), 40, 0.2, "first occurrence"
        )
        # Kill the leader between the two occurrences: the next one must fire once, and the
        # first must not fire again.
        leader = await wait_for(lambda: leader_of(http, nodes), 10, what="leader")
        victim = next(n for n in nodes if n.node_id == leader)
        survivor = next(n for n in nodes if n is not victim)
        assert datetime.now(UTC) < second - timedelta(seconds=5), "too slow to kill"
        victim.signal(signal.SIGKILL)
        await wait_for(
            lambda: _has(http, survivor, "both", [expected_first, second.isoformat()]),
            60,
            0.2,
            "second occurrence after the failover",
        )
        await wait_for(lambda: _settled(survivor, second + timedelta(seconds=5)), 30, 0.2, "settle")
        assert await runs_of(http, survivor, "both") == [expected_first, second.isoformat()]
        assert await runs_of(http, survivor, "first") == [expected_first]
        assert await runs_of(http, survivor, "auto") == [expected_first]
        # the ticks view names the two slots as two ticks of one schedule
        async with http.get(f"{survivor.url}{JOBS}/both/ticks") as resp:
            ticks = (await resp.json())["ticks"]
        assert len({t["tick"] for t in ticks}) == 2, ticks


async def _has(http, node, job: str, want: list[str]) -> bool:
    return await runs_of(http, node, job) == sorted(want)


def _settled(_node, until: datetime) -> bool:
    return datetime.now(UTC) >= until
