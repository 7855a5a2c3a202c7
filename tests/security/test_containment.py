"""Containment attacks against real `cronmesh node` processes (docs/security.md, "Tested attacks").

- A job forks a grandchild that calls ``setsid()`` (and one double-forked to init): cancelling
  the run, and killing its node with SIGKILL, leave none of them running.
- A node frozen by SIGSTOP (its event loop and its lease thread stopped) has its job killed by
  its fence before its lease can expire: the job never runs while the run is given to another
  node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.chaos.harness import wait_ready
from tests.conftest import api_session, wait_for
from tests.unit.test_cgroups import alive

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"


@pytest.fixture
def pids_file(tmp_path: Path) -> Iterator[Path]:
    """Where the job records its processes; whatever of them is left is killed at teardown (a
    failing test, or the mutation check's broken code, must not leave `sleep 300`s behind)."""
    path = tmp_path / "pids"
    yield path
    with contextlib.suppress(OSError, ValueError):
        for pid in (int(x) for x in path.read_text().split()):
            if alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def escaping_job(
    name: str, pids: Path, *, setsid: bool = True, **extra: object
) -> dict[str, object]:
    """A job whose processes try to outlive it: one leaves its session (unless ``setsid`` is
    False: nothing stops that without cgroups), one is double-forked (its parent exits, so it is
    adopted by init), one stays; all of them sleep for 5 minutes."""
    leaver = "setsid " if setsid else ""
    return {
        "name": name,
        "command": (
            f"{leaver}sh -c 'echo $$ >> {pids}; exec sleep 300' & "
            f"(sh -c 'echo $$ >> {pids}; exec sleep 301' &) ; "
            f"echo $$ >> {pids}; exec sleep 302"
        ),
        **extra,
    }


async def pids_of(path: Path, count: int = 3) -> list[int]:
    def listed() -> list[int] | None:
        if not path.exists():
            return None
        pids = [int(x) for x in path.read_text().split()]
        return pids if len(pids) >= count else None

    return await wait_for(listed, 20, what="job processes")


async def gone_within(pids: list[int], seconds: float) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not any(alive(p) for p in pids):
            return []
        await asyncio.sleep(0.01)
    return [p for p in pids if alive(p)]


async def start_run(http: aiohttp.ClientSession, url: str, job: dict[str, object]) -> str:
    async with http.post(f"{url}{JOBS}", json=job) as r:
        assert r.status == 201, await r.text()
    async with http.post(f"{url}{JOBS}/{job['name']}/runs", json={}) as r:
        assert r.status in (200, 201), await r.text()
        return str((await r.json())["id"])


async def get_run(http: aiohttp.ClientSession, url: str, run_id: str) -> dict[str, object]:
    async with http.get(f"{url}{RUNS}/{run_id}") as r:
        return dict(await r.json())


@pytest.mark.slow
@pytest.mark.parametrize("cgroups", ["auto", "off"])
async def test_sigkilled_node_leaves_no_job_process(procs, pids_file, cgroups) -> None:
    node = procs.start("victim", "--cgroups", cgroups, lease_ttl=3)
    async with api_session() as http:
        await wait_ready(http, node)
        async with http.get(f"{node.url}/status") as r:
            containment = (await r.json())["node"]["containment"]
        assert containment["fence"]["alive"]
        assert (containment["mode"] == "none") == (cgroups == "off")
        job = escaping_job("escape", pids_file, setsid=containment["mode"] != "none")
        await start_run(http, node.url, job)
        pids = await pids_of(pids_file)
        assert all(alive(p) for p in pids)
        t0 = time.monotonic()
        node.signal(signal.SIGKILL)
        await asyncio.to_thread(node.proc.wait, 10)
        left = await gone_within(pids, 1.0)
        assert left == [], f"job processes outlived their node: {left} ({containment})"
        assert time.monotonic() - t0 < 1.5


@pytest.mark.slow
async def test_cancel_kills_processes_that_left_the_session(procs, pids_file) -> None:
    node = procs.start("canceller", lease_ttl=3)
    async with api_session() as http:
        await wait_ready(http, node)
        async with http.get(f"{node.url}/status") as r:
            if (await r.json())["node"]["containment"]["mode"] == "none":
                pytest.skip("no cgroups here: a setsid() process escapes the session kill")
        run_id = await start_run(http, node.url, escaping_job("cancelled", pids_file, kill_grace=1))
        pids = await pids_of(pids_file)
        async with http.post(f"{node.url}{RUNS}/{run_id}/cancel") as r:
            assert r.status in (200, 202), await r.text()

        async def finished() -> dict[str, object] | None:
            run = await get_run(http, node.url, run_id)
            return run if run["status"] == "cancelled" else None

        await wait_for(finished, 20, what="cancelled run")
        assert await gone_within(pids, 2.0) == []


@pytest.mark.slow
@pytest.mark.parametrize("cgroups", ["auto", "off"])
async def test_frozen_node_kills_its_job_before_its_lease_expires(
    procs, etcd, keys, pids_file, cgroups
):
    ttl = 3
    node = procs.start("frozen", "--cgroups", cgroups, lease_ttl=ttl)
    try:
        async with api_session() as http:
            await wait_ready(http, node)
            async with http.get(f"{node.url}/status") as r:
                mode = (await r.json())["node"]["containment"]["mode"]
                job = escaping_job("frozen-job", pids_file, setsid=mode != "none")
            run_id = await start_run(http, node.url, job)
            pids = await pids_of(pids_file)
            claim = await etcd.get(keys.claim(run_id))
            assert claim is not None and json.loads(claim.value)["node"] == "frozen"
            stopped = time.monotonic()
            node.signal(signal.SIGSTOP)  # the loop, the lease thread: everything stops
            left = await gone_within(pids, ttl + 2.0)
            killed_after = time.monotonic() - stopped
            assert left == [], "the frozen node's job still runs"
            # Killed while the lease (and so the claim bound to it) still exists in etcd:
            # nobody else can have been given the run yet.
            assert await etcd.get(keys.claim(run_id)) is not None, "killed after the expiry"
            assert killed_after < ttl
            print(f"frozen node [{cgroups}]: job killed {killed_after:.2f}s after SIGSTOP")
            node.signal(signal.SIGCONT)

            async def retried_as_lost() -> dict[str, object] | None:
                run = await get_run(http, node.url, run_id)
                attempts = run.get("attempts") or []
                return run if attempts and attempts[0]["status"] == "lost" else None  # type: ignore[index]

            await wait_for(retried_as_lost, 30, what="the attempt recorded as lost")
    finally:
        node.signal(signal.SIGCONT)
