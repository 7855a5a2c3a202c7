"""``GET …/runs?status=waiting`` and ``cronmesh run list --status waiting`` (D320): the pending
runs a budget holds back now, each saying why, paged; a node in this process."""

from __future__ import annotations

import asyncio

from tests.conftest import run_cli, wait_for

RUNS = "/api/v1/projects/p/runs"


async def test_runs_held_back_by_a_budget_are_listed_as_waiting(cluster, tmp_path):
    await cluster.start()
    gate = tmp_path / "gate"
    status, body = await cluster.request("PUT", "/api/v1/budgets/one", json={"concurrent": 1})
    assert status == 201, body
    held = {
        "name": "held",
        "command": f'while [ ! -e "{gate}" ]; do sleep 0.05; done',
        "budgets": ["one"],
    }
    status, body = await cluster.request("PUT", "/api/v1/projects/p/jobs/held", json=held)
    assert status == 201, body
    ids = []
    for _ in range(3):
        status, run = await cluster.request("POST", "/api/v1/projects/p/jobs/held/runs", json={})
        assert status in (200, 201, 202), run
        ids.append(run["id"])

    async def two_waiting() -> list[dict] | None:
        s, b = await cluster.request("GET", f"{RUNS}?status=waiting")
        return b["runs"] if s == 200 and len(b["runs"]) == 2 else None

    waiting = await wait_for(two_waiting, 60, what="two runs held back by the budget")
    assert all(r["status"] == "pending" for r in waiting)
    assert all(r["waiting"] == "budget one: 1/1 running" for r in waiting), waiting
    status, running = await cluster.request("GET", f"{RUNS}?status=running")
    assert {r["id"] for r in waiting} | {r["id"] for r in running["runs"]} == set(ids)

    # paged, newest first, like every listing
    status, first = await cluster.request("GET", f"{RUNS}?status=waiting&limit=1")
    assert status == 200 and len(first["runs"]) == 1 and first["next"], first
    status, second = await cluster.request(
        "GET", f"{RUNS}?status=waiting&limit=1&before={first['next']}"
    )
    assert status == 200 and len(second["runs"]) == 1, second
    assert second["runs"][0]["id"] < first["runs"][0]["id"]
    assert [first["runs"][0]["id"], second["runs"][0]["id"]] == [r["id"] for r in waiting]

    # the CLI: the filter, and the table says "waiting" for a held-back run
    code, out, err = await asyncio.to_thread(
        run_cli, cluster.url(), "run", "list", "-p", "p", "--status", "waiting"
    )
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 3 and "waiting" in lines[1] and "waiting" in lines[2], out

    # a status nobody knows is still a 400 naming the field
    status, body = await cluster.request("GET", f"{RUNS}?status=held")
    assert status == 400 and body["error"]["field"] == "status", body

    gate.touch()

    async def all_done() -> bool:
        s, b = await cluster.request("GET", f"{RUNS}?job=held")
        return s == 200 and all(r["status"] == "succeeded" for r in b["runs"])

    await wait_for(all_done, 60, what="the held runs finished")
    status, body = await cluster.request("GET", f"{RUNS}?status=waiting")
    assert status == 200 and body["runs"] == [] and body["next"] is None, body
