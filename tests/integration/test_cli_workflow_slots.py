"""`cronmesh workflow slots NAME` (found walking the docs: a workflow schedule may wait on
`depends_on`, and only `job slots` could show why): the table names each waiting slot's upstream
and what it waits for, `-o json` is the API's page, an unknown workflow names the field."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, cli_env, wait_for
from tests.integration.test_depends_on import WFS, at, put, upstream


async def cli(url: str, *args: str) -> tuple[int, str, str]:
    def go() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nodes.cli", "--api", url, *args],
            capture_output=True,
            text=True,
            cwd=str(ROOT),
            env=cli_env(),
            timeout=60,
        )

    res = await asyncio.to_thread(go)  # the node runs in this event loop
    return res.returncode, res.stdout, res.stderr


@pytest.mark.timeout(90)
async def test_workflow_slots_shows_what_a_waiting_slot_waits_for(cluster):
    await cluster.start()
    url = cluster.url()
    await put(cluster, upstream("extract", "false"))  # fails: the slot keeps waiting
    wf = {
        "name": "etl",
        "tasks": [{"name": "load", "command": "true"}],
        "schedules": [{"at": at(4), "depends_on": [{"job": "extract", "window": "3s"}]}],
    }
    status, body = await cluster.request("PUT", f"{WFS}/etl", json=wf)
    assert status in (200, 201), body

    async def waiting():
        _, page = await cluster.request("GET", f"{WFS}/etl/slots")
        slot = page["slots"][0] if page["slots"] else None
        return slot if slot and slot.get("waiting_for") else None

    slot = await wait_for(waiting, 40, what="the workflow slot waits")
    code, out, err = await cli(url, "workflow", "slots", "etl")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["SLOT", "OUTCOME", "EXECUTION", "REASON"], out
    row = next(r for r in rows if r.startswith(slot["tick"]))
    assert " waiting " in row and "waiting: extract all_succeeded:" in row, out

    code, out, err = await cli(url, "-o", "json", "workflow", "slots", "etl")
    assert code == 0, err
    page = json.loads(out)
    assert page["name"] == "etl" and page["slots"][0]["tick"] == slot["tick"], page

    code, _, err = await cli(url, "workflow", "slots", "nope")
    assert code == 1 and "workflow 'nope' not found" in err, err


@pytest.mark.timeout(90)
async def test_job_slots_pages_with_limit_and_before(cluster):
    await cluster.start()
    url = cluster.url()
    await put(cluster, upstream("extract", "true"))  # a slot every 2 s

    async def three():
        _, page = await cluster.request("GET", "/api/v1/projects/default/jobs/extract/slots")
        return page if len(page["slots"]) >= 3 else None

    await wait_for(three, 40, what="three slots of extract")
    code, out, err = await cli(url, "job", "slots", "extract", "--limit", "1")
    assert code == 0, err
    first = out.splitlines()[1:]
    assert len(first) == 1, out
    assert err.startswith("older slots: --before "), err  # on stderr: the table stays a table
    before = err.split()[-1]
    code, out, err = await cli(url, "job", "slots", "extract", "--limit", "2", "--before", before)
    assert code == 0, err
    older = out.splitlines()[1:]
    assert len(older) == 2 and all(r.split()[0] < first[0].split()[0] for r in older), out
    code, _, err = await cli(url, "job", "slots", "extract", "--limit", "0")
    assert code == 1 and "(field: limit)" in err, err
