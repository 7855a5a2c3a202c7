"""Calendars, blackout windows, the freeze and the plan cross project lines (issue 21): a
cluster window or the freeze stops every project's jobs, and the plan lists job names. Attacks:
a project's admin or editor writing a cluster window, cluster calendar or the freeze (to stop
other projects' jobs); a viewer of one project reading another's jobs through the plan; a
project's window naming another project's jobs."""

from __future__ import annotations

import aiohttp

from tests.conftest import api_headers

WIN = {"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"}


async def _user(cluster, name: str, roles: dict[str, str]) -> str:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": name, "roles": roles}
    )
    assert status == 201, body
    status, body = await cluster.request("POST", f"/api/v1/users/{name}/tokens", json={})
    assert status == 201, body
    return body["token"]


async def _as(cluster, token: str, method: str, path: str, **kw):
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:
        async with http.request(method, cluster.url(None, path), **kw) as r:
            return r.status, await r.json()


async def test_project_admin_cannot_stop_other_projects(cluster):
    await cluster.start()
    admin = await _user(cluster, "padmin", {"mine": "admin"})
    for method, path, body in (
        ("PUT", "/api/v1/blackouts/all", WIN),
        ("PUT", "/api/v1/calendars/all", {"dates": ["2030-01-01"]}),
        ("PUT", "/api/v1/freeze", {"note": "mine only"}),
        ("DELETE", "/api/v1/freeze", None),
        ("PUT", "/api/v1/projects/theirs/blackouts/w", WIN),
    ):
        status, answer = await _as(cluster, admin, method, path, json=body)
        assert status == 403, (method, path, answer)
    # nothing was written
    status, body = await cluster.request("GET", "/api/v1/blackouts")
    assert body["blackouts"] == []
    status, body = await cluster.request("GET", "/api/v1/freeze")
    assert body["frozen"] is False
    # their own project's window is theirs to write, and stays in their project: a window of
    # project "mine" naming job "victim" does not touch project "theirs"'s job "victim"
    status, body = await _as(
        cluster, admin, "PUT", "/api/v1/projects/mine/blackouts/w", json={**WIN, "jobs": ["victim"]}
    )
    assert status == 201 and body["scope"] == "mine", body
    doc = {"name": "victim", "command": "true", "schedules": [{"cron": "0 12 * * *"}]}
    assert (await cluster.request("PUT", "/api/v1/projects/theirs/jobs/victim", json=doc))[0] == 201
    status, plan = await cluster.request(
        "GET", "/api/v1/plan?from=2030-01-01T00:00:00Z&to=2030-01-01T23:00:00Z&project=theirs"
    )
    assert [(s["job"], s["outcome"]) for s in plan["slots"]] == [("victim", "fire")], plan


async def test_plan_shows_only_projects_the_caller_may_view(cluster):
    await cluster.start()
    for project in ("mine", "theirs"):
        doc = {"name": f"secret-{project}", "command": "true", "schedules": [{"cron": "* * * * *"}]}
        status, body = await cluster.request(
            "PUT", f"/api/v1/projects/{project}/jobs/{doc['name']}", json=doc
        )
        assert status == 201, body
    viewer = await _user(cluster, "pview", {"mine": "viewer"})
    status, body = await _as(cluster, viewer, "GET", "/api/v1/plan")
    assert status == 200
    assert {s["project"] for s in body["slots"]} == {"mine"}
    assert "secret-theirs" not in str(body)
    status, body = await _as(cluster, viewer, "GET", "/api/v1/plan?project=theirs")
    assert status == 403 and "secret-theirs" not in str(body)
