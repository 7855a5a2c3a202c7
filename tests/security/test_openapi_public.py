"""#22 item 5: `/api/v1/openapi.json` is served without a token (D247): it describes the routes and
schemas and holds no data. The attack this must not open: reading anything of the cluster (jobs,
projects, users, nodes, tokens) anonymously through it, or through a path that merely starts
like it. Every other API route still answers 401 without a token."""

from __future__ import annotations

import aiohttp

from tests.conftest import api_headers

SECRET_NAMES = ("zz-secret-job-name", "zz-secret-project", "zz-secret-user", "n-secret-node")


async def get(cluster, path: str, token: str | None = None, method: str = "GET"):
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:
        async with http.request(method, cluster.url(None, path)) as r:
            return r.status, await r.text()


async def test_openapi_needs_no_token_and_holds_no_data(cluster):
    await cluster.start("n-secret-node")
    for path, body in (
        ("/api/v1/projects/zz-secret-project/jobs/zz-secret-job-name", {"command": "true"}),
        ("/api/v1/users", {"name": "zz-secret-user", "roles": {"*": "viewer"}}),
    ):
        method = "PUT" if "jobs" in path else "POST"
        status, out = await cluster.request(method, path, json=body)
        assert status == 201, out

    status, text = await get(cluster, "/api/v1/openapi.json")  # no token at all
    assert status == 200, text
    assert '"openapi": "3.1.0"' in text or '"openapi":"3.1.0"' in text
    for name in SECRET_NAMES:
        assert name not in text, name
    # a wrong token does not turn it into a 401 either (nothing to protect), nor into data
    status, text2 = await get(cluster, "/api/v1/openapi.json", token="cm_wrong-token-000000000000")
    assert status == 200 and text2 == text


async def test_every_other_route_still_needs_a_token(cluster):
    await cluster.start()
    for path in (
        "/api/v1/projects",
        "/api/v1/projects/default/jobs",
        "/api/v1/projects/default/runs",
        "/api/v1/nodes",
        "/api/v1/users",
        "/api/v1/auth/me",
        "/api/v1/cron/preview?cron=*",
        "/status",
        "/metrics",
        # near misses of the public path
        "/api/v1/openapi.json/../projects",
        "/api/v1/openapi.json/x",
        "/api/v1/openapi.jsonx",
        "/api/v1/OPENAPI.JSON",
        "/api/v1/openapi.json%2F..%2Fprojects",
    ):
        status, text = await get(cluster, path)
        assert status in (401, 404), (path, status, text[:200])
        assert "zz-" not in text
    # the positive control: with the admin token the same routes answer
    assert (await get(cluster, "/api/v1/projects", token=api_headers()["Authorization"][7:]))[
        0
    ] == 200


async def test_the_web_ui_links_to_it(cluster):
    await cluster.start()
    status, page = await get(cluster, "/ui/index.html")
    assert status == 200
    assert 'href="/api/v1/openapi.json"' in page
    assert (await get(cluster, "/api/v1/openapi.json"))[0] == 200  # the link works logged out
