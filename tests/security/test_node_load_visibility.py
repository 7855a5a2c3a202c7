"""A node's load (D257: what all projects' runs use on the machine, the node's RSS, the machine's
load average and memory) was in ``GET /api/v1/nodes`` for any logged-in user: a viewer of one
project could watch other projects' work rise and fall on the shared machines.

Now (D322) it is a cluster-wide read-out, as /status and /metrics are: a role on ``*`` sees it,
a user of some projects gets ``load: null`` (the machines' shape — up, capacity, groups — stays:
placement answers need it)."""

from __future__ import annotations

from tests.conftest import api_headers, wait_for


async def _user(cluster, name: str, roles: dict[str, str]) -> str:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": name, "roles": roles}
    )
    assert status == 201, body
    status, body = await cluster.request("POST", f"/api/v1/users/{name}/tokens", json={})
    assert status == 201, body
    return str(body["token"])


async def test_only_cluster_roles_see_the_machines_load(cluster):
    node = await cluster.start()
    nid = node.node_id
    project_viewer = await _user(cluster, "pv", {"p": "viewer"})
    project_admin = await _user(cluster, "pa", {"p": "admin"})
    cluster_viewer = await _user(cluster, "cv", {"*": "viewer"})

    async def as_user(token: str, path: str) -> dict:
        async with cluster.http.get(cluster.url(None, path), headers=api_headers(token)) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def published() -> dict | None:
        body = await as_user(cluster_viewer, "/api/v1/nodes")
        mine = next(n for n in body["nodes"] if n["id"] == nid)
        return mine["load"]

    load = await wait_for(published, 60, what="the node's load published")
    assert isinstance(load, dict) and load  # the cluster viewer sees the numbers

    for token in (project_viewer, project_admin):
        body = await as_user(token, "/api/v1/nodes")
        mine = next(n for n in body["nodes"] if n["id"] == nid)
        assert mine["load"] is None, mine
        assert mine["up"] is True and mine["capacity"] >= 1  # the shape stays visible
        one = await as_user(token, f"/api/v1/nodes/{nid}")
        assert one["load"] is None, one
    # the admin token (a cluster admin) sees it on the single node too
    status, one = await cluster.request("GET", f"/api/v1/nodes/{nid}")
    assert status == 200 and isinstance(one["load"], dict), one
