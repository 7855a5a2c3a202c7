"""The runs list's search, time range and paging (issue #26: the UI's runs history) against a
real node and etcd."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"


async def test_runs_search_time_range_and_paging(cluster):
    await cluster.start()
    for name in ("etl-daily", "report", "etl-weekly"):
        status, body = await cluster.request("POST", JOBS, json={"name": name, "command": "true"})
        assert status == 201, body
    made = []
    for name in ("etl-daily", "report", "etl-weekly", "etl-daily", "report"):
        status, run = await cluster.request("POST", f"{JOBS}/{name}/runs", json={})
        assert status == 201, run
        made.append(run)
    middle = datetime.fromisoformat(made[2]["created_at"].replace("Z", "+00:00"))

    async def all_done():
        _, body = await cluster.request("GET", f"{RUNS}?limit=10")
        return all(r["status"] == "succeeded" for r in body["runs"])

    await wait_for(all_done, 30, what="runs finished")
    # q: part of the job name, any case
    _, body = await cluster.request("GET", f"{RUNS}?q=ETL")
    assert [r["job"] for r in body["runs"]] == ["etl-daily", "etl-weekly", "etl-daily"]
    assert body["next"] is None
    # paging: next is the `before` of the following page, until null
    _, p1 = await cluster.request("GET", f"{RUNS}?q=etl&limit=2")
    assert [r["id"] for r in p1["runs"]] == [made[3]["id"], made[2]["id"]]
    assert p1["next"] == made[2]["id"]
    _, p2 = await cluster.request("GET", f"{RUNS}?q=etl&limit=2&before={p1['next']}")
    assert [r["id"] for r in p2["runs"]] == [made[0]["id"]] and p2["next"] is None
    # a time range is a range of ids: from is inclusive, to exclusive
    since = (middle - timedelta(milliseconds=1)).isoformat()
    _, body = await cluster.request("GET", f"{RUNS}", params={"from": since})
    assert [r["id"] for r in body["runs"]] == [m["id"] for m in reversed(made[2:])]
    _, body = await cluster.request("GET", f"{RUNS}", params={"to": since})
    assert [r["id"] for r in body["runs"]] == [m["id"] for m in reversed(made[:2])]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    _, body = await cluster.request("GET", f"{RUNS}", params={"from": future})
    assert body == {"runs": [], "next": None}
    # bad input names its field
    for params, field in (
        ({"from": "yesterday"}, "from"),
        ({"to": "13/13/2026"}, "to"),
        ({"from": future, "to": since}, "from"),
        ({"q": "x" * 201}, "q"),
    ):
        status, body = await cluster.request("GET", RUNS, params=params)
        assert status == 400 and body["error"]["field"] == field, (params, body)
