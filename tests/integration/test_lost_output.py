"""The output of a lost attempt is kept (issue #22 item 7, D255): a real node is killed while its
job writes; the run is `lost`, and with the log store its peers share (as `cronmesh dev` now
gives its nodes) another node serves what was shipped at once, and the whole spool once the
killed node starts again — through the API and `cronmesh run logs`."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.chaos.harness import wait_ready
from tests.conftest import api_session, run_cli, wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"


def stdout_lines(text: str) -> list[str]:
    return [line.split(" ", 2)[2] for line in text.splitlines() if " stdout " in line]


@pytest.mark.timeout(180)
async def test_a_lost_attempt_keeps_what_it_spooled(procs):
    shared = ("--log-store", str(procs.tmp / "logs"))
    a = procs.start("node-a", "--property", "role=runner", *shared)
    b = procs.start("node-b", *shared)
    async with api_session() as http:
        await wait_ready(http, a)
        await wait_ready(http, b)
        job = {
            "name": "talky",
            "command": "for i in $(seq 1 3000); do echo line-$i; sleep 0.05; done",
            "target": {"selector": "role=runner"},
        }
        async with http.put(f"{a.url}{JOBS}/talky", json=job) as r:
            assert r.status == 201
        async with http.post(f"{a.url}{JOBS}/talky/runs", json={}) as r:
            run_id = (await r.json())["id"]

        async def written(node, line: str):
            async with http.get(f"{node.url}{RUNS}/{run_id}/logs?attempt=1") as r:
                text = await r.text()
                return text if r.status == 200 and line in stdout_lines(text) else None

        # output reached the spool, and a segment of it the shared store (every 2 s)
        await wait_for(lambda: written(a, "line-60"), 60, what="the job writing")
        await wait_for(
            lambda: list((procs.tmp / "logs").rglob("1.log.parts/*")), 30, what="a segment"
        )
        a.signal(signal.SIGKILL)
        await asyncio.to_thread(a.proc.wait, 10)

        async def lost():
            async with http.get(f"{b.url}{RUNS}/{run_id}") as r:
                body = await r.json()
                return body if body["status"] == "lost" else None

        await wait_for(lost, 30, what="the run lost")
        # node-a is down: node-b serves what was shipped, in order, from line-1
        async with http.get(f"{b.url}{RUNS}/{run_id}/logs?attempt=1") as r:
            text = await r.text()
            assert r.status == 200, text
        shipped = stdout_lines(text)
        assert shipped[:3] == ["line-1", "line-2", "line-3"]
        assert shipped == [f"line-{i}" for i in range(1, len(shipped) + 1)]
        assert "shipped segments only" in text
        code, out, err = await asyncio.to_thread(
            run_cli, b.url, "run", "logs", run_id, "--attempt", "1"
        )
        assert code == 0, err
        assert "line-1" in out and "shipped segments only" in out

        # node-a starts again: its leftover spool goes to the store, every line it spooled
        a = procs.restart(a)
        await wait_ready(http, a)

        async def whole():
            async with http.get(f"{b.url}{RUNS}/{run_id}/logs?attempt=1") as r:
                body = await r.text()
                return body if r.status == 200 and "log ends here" in body else None

        text = await wait_for(whole, 60, what="the leftover spool uploaded")
        kept = stdout_lines(text)
        assert len(kept) >= 60 and len(kept) >= len(shipped)  # all it spooled before the kill
        assert kept == [f"line-{i}" for i in range(1, len(kept) + 1)]
        assert text.rstrip().endswith("the node stopped before this attempt ended; log ends here")
