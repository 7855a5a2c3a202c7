"""#22 item 2: Ctrl-C on a real `cronmesh node` process. The first SIGINT drains and the node
says what it waits for (how many runs, their jobs, the seconds left); the second stops the run at
once, and the run is recorded `cancelled` with reason `interrupted` (not `lost`), and not retried
although the job has retries and another node is up (D245)."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
import pytest

from tests.chaos.harness import wait_ready
from tests.conftest import api_session, wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def get(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def log_entries(path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_second_ctrl_c_stops_the_run_at_once_and_records_it_cancelled(
    procs, etcd, keys, tmp_path
):
    a = procs.start("node-a", "--drain-timeout", "120")
    async with api_session() as http:
        await wait_ready(http, a)
        marker = tmp_path / "attempts"
        pidfile = tmp_path / "pid"
        job = {
            "name": "sleepy",
            "command": f'echo "$CRONMESH_NODE $CRONMESH_ATTEMPT" >> {marker}; '
            f"echo $$ > {pidfile}; exec sleep 300",
            "retries": 2,
            "retry_interval": 0,
            "kill_grace": 60,
        }
        async with http.post(f"{a.url}{JOBS}", json=job) as r:
            assert r.status == 201, await r.text()
        async with http.post(f"{a.url}{JOBS}/sleepy/runs", json={}) as r:
            run = await r.json()
        await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, what="start")
        pid = int(pidfile.read_text())
        b = procs.start("node-b")  # could take a retry: none must come
        await wait_ready(http, b)

        a.signal(signal.SIGINT)

        def draining() -> dict | None:
            return next((e for e in log_entries(a.log_path) if e.get("event") == "draining"), None)

        notice = await wait_for(draining, 20, what="the drain notice")
        assert notice["running"] == 1 and notice["jobs"] == ["default/sleepy"], notice
        assert 100 <= notice["left"] <= 120, notice
        assert "Ctrl-C" in notice["hint"]

        # it waits: the drain loop comes round again (its next notice, DRAIN_TELL_EVERY s later)
        # with the run still counted, and only then are the node and the process checked
        def notices() -> list[dict]:
            return [e for e in log_entries(a.log_path) if e.get("event") == "draining"]

        await wait_for(lambda: len(notices()) >= 2, 30, what="the drain's second notice")
        again = notices()[1]
        assert again["running"] == 1 and again["left"] < notice["left"], again
        assert a.alive() and _alive(pid)
        assert (await get(http, f"{b.url}{RUNS}/{run['id']}"))["status"] == "running"

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        a.signal(signal.SIGINT)
        await asyncio.to_thread(a.proc.wait, 30)
        stopped_in = loop.time() - t0
        assert a.proc.returncode == 0
        assert stopped_in < 15, stopped_in  # at once: not the 120 s drain, nor the 60 s grace
        await wait_for(lambda: not _alive(pid), 15, what="the job to be killed")

        done = await get(http, f"{b.url}{RUNS}/{run['id']}")
        assert done["status"] == "cancelled", done
        assert done["reason"] == "interrupted", done
        assert "interrupted" in done["error"], done
        assert [x["status"] for x in done["attempts"]] == ["cancelled"]
        assert done["attempts"][0]["node"] == "node-a"
        assert done["attempt"] == 1 and done["finished_at"]
        assert any(
            e.get("event") == "interrupted: stopping the runs at once"
            for e in log_entries(a.log_path)
        )

        # not retried, though the job has retries and node-b is up and idle. A retry needs a
        # queue entry, written with a `pending` record by the attempt's end or by the leader's
        # reaper (which finishes only `running` runs whose claim is gone). Wait until node-b
        # leads (its reaper watches from then and reconciles at once), then show that the
        # record is final and nothing is queued, active or claimed: no retry can start.
        def leading() -> bool:
            return any(e.get("event") == "scheduler leading" for e in log_entries(b.log_path))

        await wait_for(leading, 30, what="node-b to lead")
        again = await get(http, f"{b.url}{RUNS}/{run['id']}")
        assert again["status"] == "cancelled" and again["attempt"] == 1
        queued = (await etcd.range_all(keys.queue(), keys_only=True)).kvs
        assert not [kv.key for kv in queued if kv.key.endswith(run["id"])]
        assert (await etcd.range_all(keys.actives("default", "sleepy"), keys_only=True)).kvs == []
        assert await etcd.get(keys.claim(run["id"])) is None
        assert marker.read_text().splitlines() == ["node-a 1"]
