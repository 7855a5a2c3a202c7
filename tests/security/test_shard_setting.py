"""The scheduler_shards setting (D300) is the cluster admin's: changing it deposes every scheduling
leader at once, so anyone else who could write it could pause every schedule of the cluster at
will (a leader change per request). Bad values are refused naming the field, nothing written."""

from __future__ import annotations

import aiohttp

from cluster.shard_store import read_shards
from tests.conftest import api_headers
from tests.integration.test_access import make_user

PATH = "/api/v1/settings/scheduler-shards"


async def as_user(cluster, token: str | None, method: str, body=None):
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:
        async with http.request(method, cluster.url(None, PATH), json=body) as resp:
            data = await resp.json() if resp.content_type == "application/json" else None
            return resp.status, data


async def test_only_a_cluster_admin_reads_or_changes_the_shard_count(cluster, etcd, keys):
    await cluster.start()
    project_admin = await make_user(cluster, "owner", {"a": "admin"})
    viewer = await make_user(cluster, "everyone", {"*": "viewer"})
    for token in (project_admin, viewer):
        status, body = await as_user(cluster, token, "PUT", {"shards": 8})
        assert status == 403, body
    status, _ = await as_user(cluster, None, "PUT", {"shards": 8})
    assert status == 401
    assert (await read_shards(etcd, keys))[:2] == (1, 0)  # nothing written
    status, body = await as_user(cluster, viewer, "GET")
    assert status == 403, body
    # the cluster admin can (positive control)
    status, body = await cluster.request("PUT", PATH, json={"shards": 2})
    assert status == 200 and body["shards"] == 2, body
    assert (await read_shards(etcd, keys))[0] == 2


async def test_bad_shard_counts_are_refused_naming_the_field(cluster, etcd, keys):
    await cluster.start()
    for body, field in [
        ({"shards": 0}, "shards"),
        ({"shards": 65}, "shards"),
        ({"shards": "4"}, "shards"),
        ({"shards": True}, "shards"),
        ({"shards": 1.5}, "shards"),
        ({}, "shards"),
        ({"shards": 2, "leaders": {}}, "leaders"),
    ]:
        status, answer = await cluster.request("PUT", PATH, json=body)
        assert status == 400, (body, answer)
        assert answer["error"]["field"] == field, (body, answer)
    status, answer = await cluster.request("PUT", PATH, json=[4])
    assert status == 400, answer
    assert (await read_shards(etcd, keys))[:2] == (1, 0)
