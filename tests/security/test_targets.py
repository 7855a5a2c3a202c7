"""#18 item 7: an editor of one project cannot place code on another project's nodes.

Three real `cronmesh node` processes: ``node-a`` bound to group ``ga`` (granted to project ``a``),
``node-b`` bound to ``gb`` (granted to ``b``), ``node-s`` bound to no group (shared). The attacker
is an editor of project ``a`` only (D155).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.chaos.harness import wait_ready
from tests.conftest import api_headers, api_session, wait_for

A = "/api/v1/projects/a"


async def call(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **kw: Any
) -> tuple[int, Any]:
    headers = api_headers(token) if token else None
    timeout = aiohttp.ClientTimeout(total=15)
    async with http.request(method, url, headers=headers, timeout=timeout, **kw) as r:
        return r.status, await r.json() if r.content_type == "application/json" else await r.text()


async def setup(http: aiohttp.ClientSession, base: str) -> str:
    """Groups, grants, bindings and an editor of ``a``; answers the editor's token."""
    for group, project, node in (("ga", "a", "node-a"), ("gb", "b", "node-b")):
        status, body = await call(http, "PUT", f"{base}/api/v1/groups/{group}", json={})
        assert (status, body["projects"]) == (201, []), body  # a new group: nobody's
        status, body = await call(http, "PUT", f"{base}/api/v1/groups/{group}/projects/{project}")
        assert (status, body["projects"]) == (200, [project]), body
        status, _ = await call(
            http, "PUT", f"{base}/api/v1/groups/{group}/bindings/x", json={"node": node}
        )
        assert status == 201
    user = {"name": "mallory", "roles": {"a": "editor"}}
    assert (await call(http, "POST", f"{base}/api/v1/users", json=user))[0] == 201
    status, body = await call(http, "POST", f"{base}/api/v1/users/mallory/tokens", json={})
    assert status == 201
    return str(body["token"])


async def run_record(http: aiohttp.ClientSession, base: str, run_id: str) -> dict[str, Any]:
    status, body = await call(http, "GET", f"{base}{A}/runs/{run_id}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


@pytest.mark.timeout(240)
async def test_an_editor_of_a_cannot_get_a_run_onto_a_node_granted_only_to_b(procs):
    nodes = [
        procs.start("node-a", "--property", "pool=a", "--handoff-delay", "0.1"),
        procs.start("node-b", "--property", "pool=b", "--handoff-delay", "0.1"),
        procs.start("node-s", "--property", "pool=s", "--handoff-delay", "0.1"),
    ]
    async with api_session() as http:
        for n in nodes:
            await wait_ready(http, n)
        base = nodes[0].url
        token = await setup(http, base)

        # 1. Target b's group: 403 naming the group, nothing stored (job, workflow, patch).
        job = {"command": "id", "target": {"group": "gb"}}
        status, body = await call(http, "PUT", f"{base}{A}/jobs/steal", token, json=job)
        assert status == 403, body
        assert body["error"]["field"] == "target.group" and "'gb'" in body["error"]["message"]
        assert (await call(http, "GET", f"{base}{A}/jobs/steal", token))[0] == 404
        wf = {"tasks": [{"name": "t", "command": "id", "target": {"group": "gb"}}]}
        status, body = await call(http, "PUT", f"{base}{A}/workflows/steal", token, json=wf)
        assert (status, body["error"]["field"]) == (403, "tasks.0.target.group"), body
        assert (await call(http, "GET", f"{base}{A}/workflows/steal", token))[0] == 404
        ok_job = {"command": "true", "target": {"group": "ga"}}
        assert (await call(http, "PUT", f"{base}{A}/jobs/mine", token, json=ok_job))[0] == 201
        status, body = await call(
            http, "PATCH", f"{base}{A}/jobs/mine", token, json={"target": {"group": "gb"}}
        )
        assert (status, body["error"]["field"]) == (403, "target.group"), body
        _, stored = await call(http, "GET", f"{base}{A}/jobs/mine", token)
        assert stored["target"]["group"] == "ga"

        # 2. A selector aimed at b's node: accepted (it names no group) but never placed there.
        aimed = {"command": "true", "target": {"selector": "pool=b"}}
        assert (await call(http, "PUT", f"{base}{A}/jobs/aimed", token, json=aimed))[0] == 201
        status, run = await call(http, "POST", f"{base}{A}/jobs/aimed/runs", token, json={})
        assert status == 201, run
        # 3. No target at all: spread over a's node and the shared one, never b's.
        free = {"command": "true", "keep_runs": 1000}
        assert (await call(http, "PUT", f"{base}{A}/jobs/free", token, json=free))[0] == 201
        ids = []
        for _ in range(30):
            status, body = await call(http, "POST", f"{base}{A}/jobs/free/runs", token, json={})
            assert status == 201, body
            ids.append(body["id"])

        async def all_done() -> list[dict[str, Any]] | None:
            runs = [await run_record(http, base, i) for i in ids]
            return runs if all(r["status"] == "succeeded" for r in runs) else None

        done = await wait_for(all_done, 90, interval=0.3, what="a's runs finished")
        spread = {r["node"] for r in done}
        assert spread <= {"node-a", "node-s"} and len(spread) == 2, spread
        aimed_run = await run_record(http, base, run["id"])
        assert aimed_run["status"] == "pending" and aimed_run["node"] is None
        assert aimed_run["placement"]["reason"] == (
            "no eligible node: node-a does not match the selector; "
            "node-b is reserved by groups not granted to project 'a'; "
            "node-s does not match the selector"
        )

        # 4. A grant revoked later stops new placements of a job stored while it held.
        status, body = await call(http, "DELETE", f"{base}/api/v1/groups/ga/projects/a")
        assert (status, body["projects"]) == (200, []), body
        status, late = await call(http, "POST", f"{base}{A}/jobs/mine/runs", token, json={})
        assert status == 201, late
        await asyncio.sleep(2)  # give every worker time to (wrongly) claim it
        late = await run_record(http, base, late["id"])
        assert late["status"] == "pending", late
        assert late["placement"]["reason"] == (
            "no eligible node: group 'ga' is not granted to project 'a'"
        )
        # the editor cannot grant it back
        status, _ = await call(http, "PUT", f"{base}/api/v1/groups/ga/projects/a", token)
        assert status == 403
        status, _ = await call(http, "PUT", f"{base}/api/v1/groups/gb/projects/a", token)
        assert status == 403


async def test_a_deleted_projects_grants_do_not_pass_to_a_new_project_of_that_name(cluster):
    await cluster.start("n1")
    req = cluster.request
    assert (await req("POST", "/api/v1/projects", json={"name": "gone"}))[0] == 201
    await req("PUT", "/api/v1/groups/gpu", json={"projects": ["gone", "kept"]})
    assert (await req("DELETE", "/api/v1/projects/gone"))[0] == 204
    status, group = await req("GET", "/api/v1/groups/gpu")
    assert group["projects"] == ["kept"]
    # recreated under the same name: nothing granted
    assert (await req("POST", "/api/v1/projects", json={"name": "gone"}))[0] == 201
    job = {"command": "true", "target": {"group": "gpu"}}
    status, body = await req("PUT", "/api/v1/projects/gone/jobs/j", json=job)
    assert (status, body["error"]["code"]) == (403, "group_not_granted"), body
