"""Issue 19 item 17: /metrics and /status listed every project, job, node address, pid and machine
id to anyone. They now need a viewer on '*' or a metrics-only credential (D166); the probes stay
public."""

from __future__ import annotations

import aiohttp

from tests.conftest import api_headers

METRICS_TOKEN = "cm_metrics-only-token-0123456789"


async def get(cluster, path: str, token: str | None) -> tuple[int, str]:
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:
        async with http.get(cluster.url(None, path)) as r:
            return r.status, await r.text()


async def user_token(cluster, name: str, roles: dict[str, str], **spec) -> str:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": name, "roles": roles}
    )
    assert status == 201, body
    status, body = await cluster.request("POST", f"/api/v1/users/{name}/tokens", json=spec)
    assert status == 201, body
    return body["token"]


async def test_metrics_and_status_need_a_token_probes_stay_public(cluster):
    await cluster.start(metrics_token=METRICS_TOKEN)
    status, body = await cluster.request(
        "PUT", "/api/v1/projects/b/jobs/secret-job", json={"name": "secret-job", "command": "true"}
    )
    assert status == 201, body
    for path in ("/healthz", "/readyz"):
        assert (await get(cluster, path, None))[0] == 200
    # the attack: anonymous reads of every project's job names and every node's address
    for path in ("/metrics", "/status"):
        status, text = await get(cluster, path, None)
        assert status == 401 and "secret-job" not in text, text
    # a viewer of one project does not get the cluster-wide read-outs either
    viewer = await user_token(cluster, "va", {"a": "viewer"})
    for path in ("/metrics", "/status"):
        status, text = await get(cluster, path, viewer)
        assert status == 403 and "metrics token" in text, text
    # a viewer on every project may
    everywhere = await user_token(cluster, "vall", {"*": "viewer"})
    assert (await get(cluster, "/status", everywhere))[0] == 200
    # the configured metrics token reads both, and nothing else
    status, text = await get(cluster, "/metrics", METRICS_TOKEN)
    assert status == 200 and "cronmesh_" in text
    assert (await get(cluster, "/status", METRICS_TOKEN))[0] == 200
    for path in ("/api/v1/projects/b/jobs", "/api/v1/nodes", "/api/v1/auth/me"):
        assert (await get(cluster, path, METRICS_TOKEN))[0] == 401, path


async def test_metrics_scoped_api_tokens(cluster):
    await cluster.start()
    # only a cluster admin hands out metrics tokens (they read every project's job names)
    status, body = await cluster.request("POST", "/api/v1/users", json={"name": "eve", "roles": {}})
    assert status == 201
    status, body = await cluster.request("POST", "/api/v1/users/eve/tokens", json={})
    eve = body["token"]
    async with aiohttp.ClientSession(headers=api_headers(eve)) as http:
        url = cluster.url(None, "/api/v1/users/eve/tokens")
        async with http.post(url, json={"scope": "metrics"}) as r:
            assert r.status == 403 and (await r.json())["error"]["field"] == "scope"
    prom = await user_token(cluster, "prom", {}, scope="metrics", description="prometheus")
    assert (await get(cluster, "/metrics", prom))[0] == 200
    assert (await get(cluster, "/status", prom))[0] == 200
    status, text = await get(cluster, "/api/v1/nodes", prom)
    assert status == 403 and "/metrics" in text
    # an admin's metrics token is still only a metrics token
    admin_metrics = (
        await cluster.request("POST", "/api/v1/users/admin/tokens", json={"scope": "metrics"})
    )[1]["token"]
    assert (await get(cluster, "/api/v1/users", admin_metrics))[0] == 403
    status, body = await cluster.request("GET", "/api/v1/users/prom/tokens")
    assert [t["scope"] for t in body["tokens"]] == ["metrics"]
