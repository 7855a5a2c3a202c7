"""What bounds a node's processes (D260), on real `cronmesh node` processes: ``capacity`` bounds
the runs whose commands actually RUN at once (observed by the jobs themselves), while runs claimed
ahead of their tick are held armed apart from it, up to ``max_armed`` (observed in /proc: an
armed process is a child of the node still waiting in its ``read`` of the go line)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from cluster.models import FINISHED
from nodes.executor.arming import armed_argv
from tests.chaos.harness import wait_ready
from tests.conftest import api_session, wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"
ARMED_MARK = armed_argv(["/bin/sh", "-c", "x"])[2].split(";")[0].encode()  # the go line's read


def armed_children(node_pid: int) -> int:
    """Children of ``node_pid`` armed and not yet released (a released command `exec`s away)."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            if int(stat.rsplit(b")", 1)[1].split()[1]) != node_pid:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                if ARMED_MARK in f.read():
                    count += 1
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return count


class ArmedWatch:
    """The most armed children of a node seen at once, sampled every few milliseconds until
    just before ``until`` (the tick): a run spawned at its tick into a cgroup is held the same
    way for a moment, so only what is held before the tick is armed ahead."""

    def __init__(self, pid: int, until: float) -> None:
        self.pid = pid
        self.until = until
        self.most = 0
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while time.time() < self.until - 0.02:
            seen = await asyncio.to_thread(armed_children, self.pid)
            self.most = max(self.most, seen)
            await asyncio.sleep(0.005)

    async def stop(self) -> int:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.most


async def _post_jobs(http, url: str, names: list[str], command: str) -> float:
    """Jobs due every 10 s, created early in a 10 s period: all share the next tick, which is
    far enough ahead to be written and claimed ahead of it. Answers that tick."""
    await wait_for(lambda: 0.2 < time.time() % 10 < 4, 15, interval=0.05, what="a fresh period")
    for name in names:
        job = {"name": name, "command": command, "schedules": [{"cron": "*/10 * * * * *"}]}
        async with http.post(f"{url}{JOBS}", json=job) as r:
            assert r.status == 201, await r.text()
    return float((int(time.time()) // 10 + 1) * 10)


async def _first_tick_runs(http, url: str, names: list[str]) -> list[dict]:
    """The runs of the first tick all jobs share, once each has finished; then the jobs are
    disabled (their next tick would start more)."""

    async def finished():
        runs = {}
        for name in names:
            async with http.get(f"{url}{RUNS}?job={name}&limit=20") as r:
                assert r.status == 200, await r.text()
                runs[name] = sorted((await r.json())["runs"], key=lambda x: x["scheduled_at"])
        firsts = [rs[0] for rs in runs.values() if rs]
        if len(firsts) < len(names) or len({r["scheduled_at"] for r in firsts}) != 1:
            return None
        return firsts if all(r["status"] in FINISHED for r in firsts) else None

    firsts = await wait_for(finished, 60, interval=0.2, what="the first tick's runs")
    for name in names:
        async with http.patch(f"{url}{JOBS}/{name}", json={"enabled": False}) as r:
            assert r.status == 200, await r.text()
    return firsts


async def test_capacity_bounds_what_runs_while_more_runs_wait_armed(procs, tmp_path: Path):
    """4 long runs due at one tick on a node of capacity 2: all 4 are armed ahead (more than the
    capacity: arming does not take a seat), only 2 ever run at once, and the other 2 start as
    the first ones end."""
    running, log = tmp_path / "running", tmp_path / "starts"
    running.mkdir()
    names = [f"long{i}" for i in range(4)]
    node = procs.start("cap-a", "--capacity", "2")
    # Each run counts the runs present (itself included) when it starts, and leaves when done.
    command = (
        f'me={running}/$CRONMESH_RUN_ID; touch "$me"; '
        f'echo "$(ls {running} | wc -l) $(date +%s.%N)" >> {log}; sleep 2; rm "$me"'
    )
    async with api_session() as http:
        await wait_ready(http, node)
        watch = ArmedWatch(node.proc.pid, await _post_jobs(http, node.url, names, command))
        try:
            runs = await _first_tick_runs(http, node.url, names)
        finally:
            most_armed = await watch.stop()
    assert [r["status"] for r in runs] == ["succeeded"] * 4, runs
    starts = [line.split() for line in log.read_text().splitlines()]
    seen_at_start = [int(n) for n, _ in starts]
    assert max(seen_at_start) == 2, starts  # never 3 at once; the capacity is used
    times = sorted(float(t) for _, t in starts)
    assert times[2] - times[0] > 1.5, times  # the last two waited for the first two to end
    assert most_armed >= 3, most_armed  # held armed beyond the capacity


async def test_armed_runs_never_exceed_max_armed_and_the_rest_still_run(procs):
    """5 runs due at one tick on a node allowed 2 armed runs: at most 2 armed processes exist at
    once, and every run still runs (the others are claimed at their tick)."""
    names = [f"quick{i}" for i in range(5)]
    node = procs.start("cap-b", "--max-armed", "2")
    async with api_session() as http:
        await wait_ready(http, node)
        watch = ArmedWatch(node.proc.pid, await _post_jobs(http, node.url, names, "exec sleep 0.5"))
        try:
            runs = await _first_tick_runs(http, node.url, names)
        finally:
            most_armed = await watch.stop()
    assert [r["status"] for r in runs] == ["succeeded"] * 5, runs
    assert most_armed == 2, most_armed  # the bound, and reached (the sampling saw arming)
