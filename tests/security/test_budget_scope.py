"""Budgets are the cluster admin's (D274): an editor of one project can neither write a budget
nor use up one that is not open to their project, by name or by tag."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from cluster.budget_store import BudgetStore
from tests.conftest import api_headers, wait_for
from tests.integration.test_access import make_user


def gated(path: Path, name: str) -> str:
    return f"touch {path}/{name}-$CRONMESH_RUN_ID; while [ ! -e {path}/go ]; do sleep 0.05; done"


async def test_an_editor_of_b_cannot_write_or_use_up_a_budget_open_only_to_a(cluster, tmp_path):
    await cluster.start("n1", capacity=16)
    req = cluster.request
    for p in ("a", "b"):
        assert (await req("POST", "/api/v1/projects", json={"name": p}))[0] == 201
    user = {"name": "mallory", "roles": {"b": "editor"}}
    assert (await req("POST", "/api/v1/users", json=user))[0] == 201
    status, body = await req("POST", "/api/v1/users/mallory/tokens", json={})
    mallory = api_headers(str(body["token"]))
    doc = {"concurrent": 1, "match": {"tags": ["api"]}, "projects": ["a"]}
    assert (await req("PUT", "/api/v1/budgets/a-api", json=doc))[0] == 201

    # writing budgets is the cluster admin's
    for method in ("PUT", "DELETE"):
        status, body = await req(
            method, "/api/v1/budgets/a-api", json={"concurrent": 100}, headers=mallory
        )
        assert status == 403, body
    status, body = await req("GET", "/api/v1/budgets/a-api", headers=mallory)
    assert status == 200 and body["concurrent"] == 1  # reading is fine, nothing changed

    # naming it from project b: 403 naming the field, nothing stored
    job = {"command": "true", "budgets": ["a-api"]}
    status, body = await req("PUT", "/api/v1/projects/b/jobs/hog", json=job, headers=mallory)
    assert (status, body["error"]["code"], body["error"]["field"]) == (
        403,
        "budget_not_open",
        "budgets.0",
    ), body
    assert (await req("GET", "/api/v1/projects/b/jobs/hog"))[0] == 404
    wf = {"tasks": [{"name": "t", "command": "true", "budgets": ["a-api"]}]}
    status, body = await req("PUT", "/api/v1/projects/b/workflows/w", json=wf, headers=mallory)
    assert (status, body["error"]["field"]) == (403, "tasks.0.budgets.0"), body

    # joining it by tag from project b: b's runs do not take a's slot
    job = {"command": gated(tmp_path, "b"), "tags": ["api"]}
    status, body = await req("PUT", "/api/v1/projects/b/jobs/hog", json=job, headers=mallory)
    assert status == 201, body
    for _ in range(3):
        status, _ = await req("POST", "/api/v1/projects/b/jobs/hog/runs", json={}, headers=mallory)
        assert status == 201
    await wait_for(lambda: len(list(tmp_path.glob("b-*"))) == 3, 20, what="b's runs running")
    _, body = await req("GET", "/api/v1/budgets/a-api")
    assert body["use"]["running"] == 0
    assert (
        await req(
            "PUT",
            "/api/v1/projects/a/jobs/j",
            json={"command": gated(tmp_path, "a"), "tags": ["api"]},
        )
    )[0] == 201
    assert (await req("POST", "/api/v1/projects/a/jobs/j/runs", json={}))[0] == 201
    await wait_for(lambda: list(tmp_path.glob("a-*")), 20, what="a's run started at once")
    _, body = await req("GET", "/api/v1/budgets/a-api")
    assert body["use"]["running"] == 1
    (tmp_path / "go").touch()

    async def idle() -> bool:
        _, body = await req("GET", "/api/v1/budgets/a-api")
        return body["use"]["running"] == 0

    await wait_for(idle, 20, what="slot given back")


async def test_listing_budgets_reads_their_use_in_a_few_round_trips(cluster, etcd, keys):
    """Any signed-in user lists budgets with their use, up to 1000 a page: that was two reads (one
    transaction) per budget, 1000 round trips per request (~0.7 s of a node at 1000 budgets),
    and ``/status`` paid 100 per scrape. Now 60 budgets share a transaction (D505)."""
    node = await cluster.start()
    store = BudgetStore(etcd, keys, lambda: datetime.now(UTC))
    for i in range(150):
        await store.put(
            {"name": f"b{i:03d}", "concurrent": 2, "starts": {"per": "minute", "limit": 5}}, "t"
        )
    await etcd.put(keys.budget_slot("b007", 0), "123")  # one slot in use
    viewer = await make_user(cluster, "v", {"a": "viewer"})
    calls = 0
    txn = node.etcd.txn

    async def counted(*args, **kw):
        nonlocal calls
        calls += 1
        return await txn(*args, **kw)

    node.etcd.txn = counted
    try:
        async with aiohttp.ClientSession(headers=api_headers(viewer)) as http:
            url = cluster.url(None, "/api/v1/budgets?limit=1000")
            async with http.get(url) as resp:
                assert resp.status == 200
                page = await resp.json()
    finally:
        node.etcd.txn = txn
    assert len(page["budgets"]) == 150
    use = {b["name"]: b["use"] for b in page["budgets"]}
    assert use["b007"]["running"] == 1 and use["b008"]["running"] == 0
    assert use["b149"]["starts"]["count"] == 0 and use["b149"]["starts"]["limit"] == 5
    assert calls <= 150 // 60 + 2, calls  # a transaction per 60 budgets, not one per budget
