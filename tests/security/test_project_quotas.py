"""#19 item 2: one project could stop scheduling for all. The leader read every job in one etcd
range; 280 jobs of 250 KB in one project made that answer exceed the client's 64 MiB cap, and
every new leader failed forever. Now bulk reads are paged and projects have quotas.

The cap is lowered through config (``etcd_max_message``: 2 MiB) so a dozen real 250 KB jobs
exceed it, instead of writing 64 MiB.
"""

from __future__ import annotations

import pytest

from cluster.errors import Unavailable
from cluster.etcd import Etcd
from cluster.quotas import DEFAULT_RUN_HISTORY_BYTES
from tests.conftest import api_headers, wait_for

CAP = 2 * 1024 * 1024


def big_job(name: str, schedules: list[dict] | None = None) -> dict:
    """A job document of ~250 KB (the largest a job may be is 256 KiB)."""
    params = {f"V{i:02d}": "x" * 4000 for i in range(62)}
    return {"name": name, "command": "true", "parameters": params, "schedules": schedules or []}


async def _user(cluster, name: str, roles: dict[str, str]) -> str:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": name, "roles": roles}
    )
    assert status == 201, body
    status, body = await cluster.request("POST", f"/api/v1/users/{name}/tokens", json={})
    assert status == 201, body
    return body["token"]


async def test_leader_starts_and_schedules_others_despite_a_huge_project(
    cluster, etcd_server, keys
):
    # the run-history quota (D210) would refuse the 7th such job at its default: not the point here
    writer = await cluster.start(
        "n1", etcd_max_message=CAP, etcd_page_keys=500, quota_run_history_bytes=10**12
    )
    for i in range(12):  # ~3 MB of jobs in one project: more than one answer may hold
        status, body = await cluster.request(
            "PUT", f"/api/v1/projects/big/jobs/j{i:02d}", json=big_job(f"j{i:02d}")
        )
        assert status == 201, body
    # read at once, the prefix is over the cap: this is what made every leader fail
    async with Etcd([etcd_server.endpoint], max_message=CAP) as raw:
        with pytest.raises(Unavailable, match="RESOURCE_EXHAUSTED"):
            await raw.range(keys.jobs())
    await cluster.stop(writer)

    # a new leader with the same cap loads every job (paged) and fires another project's job
    node = await cluster.start("n2", etcd_max_message=CAP, etcd_page_keys=500)
    status, body = await cluster.request(
        "PUT",
        "/api/v1/projects/small/jobs/tick",
        json={"name": "tick", "command": "true", "schedules": [{"cron": "* * * * * *"}]},
    )
    assert status == 201, body
    await wait_for(lambda: node.leading and node.scheduler is not None, 60, what="leadership")
    assert node.scheduler is not None

    async def fired() -> bool:
        s, b = await cluster.request("GET", "/api/v1/projects/small/runs?job=tick")
        return s == 200 and len(b["runs"]) > 0

    await wait_for(fired, 60, what="small/tick fired by the new leader")
    loaded = {jk for jk in node.scheduler.jobs if jk[0] == "big"}
    assert len(loaded) == 12
    # the list endpoint pages too (and never answers more than a page)
    status, body = await cluster.request("GET", "/api/v1/projects/big/jobs?limit=5")
    assert status == 200 and len(body["jobs"]) == 5 and body["next"] == "j04"


async def test_project_quotas_refuse_growth_with_a_clear_answer(cluster):
    await cluster.start(quota_jobs=3, quota_workflows=1, quota_bytes=600_000)
    base = "/api/v1/projects/p"
    for i in range(3):
        status, body = await cluster.request(
            "PUT", f"{base}/jobs/j{i}", json={"name": f"j{i}", "command": "true"}
        )
        assert status == 201, body
    status, body = await cluster.request(
        "POST", f"{base}/jobs", json={"name": "j3", "command": "true"}
    )
    assert status == 403, body
    assert body["error"]["code"] == "quota_exceeded"
    assert body["error"]["field"] == "quotas.jobs" and "3" in body["error"]["message"]
    assert (await cluster.request("GET", f"{base}/jobs/j3"))[0] == 404  # nothing half-written

    # bytes: two 250 KB documents fit in 600 000 bytes, a third does not
    status, body = await cluster.request("PUT", f"{base}/jobs/j0", json=big_job("j0"))
    assert status == 200, body
    status, body = await cluster.request("PUT", f"{base}/jobs/j1", json=big_job("j1"))
    assert status == 200, body
    status, body = await cluster.request("PUT", f"{base}/jobs/j2", json=big_job("j2"))
    assert status == 403 and body["error"]["field"] == "quotas.bytes", body
    status, body = await cluster.request("GET", f"{base}/jobs/j2")
    assert status == 200 and body["parameters"] == {}  # the old document is still there
    # shrinking is always allowed, and frees room
    status, body = await cluster.request(
        "PUT", f"{base}/jobs/j1", json={"name": "j1", "command": "true"}
    )
    assert status == 200, body
    status, body = await cluster.request("PUT", f"{base}/jobs/j2", json=big_job("j2"))
    assert status == 200, body

    # workflows have their own count
    wf = {"name": "w", "tasks": [{"name": "a", "command": "true"}]}
    assert (await cluster.request("PUT", f"{base}/workflows/w", json=wf))[0] == 201
    status, body = await cluster.request("PUT", f"{base}/workflows/w2", json={**wf, "name": "w2"})
    assert status == 403 and body["error"]["field"] == "quotas.workflows", body

    # what the project holds and may hold
    status, body = await cluster.request("GET", base)
    assert status == 200, body
    assert body["quotas"] == {
        "jobs": 3,
        "workflows": 1,
        "bytes": 600_000,
        "run_history_bytes": DEFAULT_RUN_HISTORY_BYTES,
    }
    assert body["usage"]["jobs"] == 3 and body["usage"]["workflows"] == 1
    assert 450_000 < body["usage"]["bytes"] <= 600_000

    # only a cluster admin raises a project's quota; bad values name the field
    editor = await _user(cluster, "ed", {"p": "admin"})
    async with cluster.http.put(
        cluster.url(None, base), json={"quotas": {"jobs": 100}}, headers=api_headers(editor)
    ) as resp:
        assert resp.status == 403
    status, body = await cluster.request("PUT", base, json={"quotas": {"jobs": -1}})
    assert status == 400 and body["error"]["field"] == "quotas.jobs", body
    status, body = await cluster.request("PUT", base, json={"quotas": {"files": 1}})
    assert status == 400 and body["error"]["field"] == "quotas", body
    status, body = await cluster.request("PUT", base, json={"quotas": {"jobs": 4}})
    assert status == 200 and body["quotas"]["jobs"] == 4, body
    status, body = await cluster.request(
        "POST", f"{base}/jobs", json={"name": "j3", "command": "true"}
    )
    assert status == 201, body
    # a later PUT without quotas keeps the override
    status, body = await cluster.request("PUT", base, json={"description": "d"})
    assert status == 200 and body["quota_overrides"] == {"jobs": 4}, body
    # deleting frees the count
    assert (await cluster.request("DELETE", f"{base}/jobs/j3"))[0] == 204
    status, body = await cluster.request("GET", base)
    assert body["usage"]["jobs"] == 3


async def test_bytes_of_documents_written_before_quotas_are_counted(cluster, etcd, keys):
    """Documents from before this version have no recorded size: the first check records them."""
    await cluster.start(quota_bytes=600_000)
    base = "/api/v1/projects/old"
    for name in ("a", "b"):
        status, body = await cluster.request("PUT", f"{base}/jobs/{name}", json=big_job(name))
        assert status == 201, body
    await etcd.delete(keys.doc_sizes("old"), prefix=True)  # as an older version left them
    status, body = await cluster.request("PUT", f"{base}/jobs/c", json=big_job("c"))
    assert status == 403 and body["error"]["field"] == "quotas.bytes", body


async def test_list_endpoints_are_paged(cluster):
    await cluster.start()
    base = "/api/v1/projects/p"
    names = [f"j{i}" for i in range(7)]
    for name in names:
        await cluster.request("PUT", f"{base}/jobs/{name}", json={"name": name, "command": "true"})
        await cluster.request(
            "PUT",
            f"{base}/workflows/{name}",
            json={"name": name, "tasks": [{"name": "a", "command": "true"}]},
        )
    for kind in ("jobs", "workflows"):
        seen, after = [], ""
        for _ in range(10):
            status, body = await cluster.request(
                "GET", f"{base}/{kind}?limit=3" + (f"&after={after}" if after else "")
            )
            assert status == 200 and len(body[kind]) <= 3, body
            seen += [x["name"] for x in body[kind]]
            after = body["next"]
            if not after:
                break
        assert seen == names
    status, body = await cluster.request("GET", f"{base}/jobs?limit=5000")
    assert status == 400 and body["error"]["field"] == "limit"
    status, body = await cluster.request("GET", f"{base}/jobs?after=..%2Fother")
    assert status == 400 and body["error"]["field"] == "after"
    status, body = await cluster.request("GET", "/api/v1/projects?limit=1")
    assert status == 200 and body["projects"] == ["p"] and body["next"] is None


async def test_paged_reads_fit_any_values_under_the_cap(etcd_server, etcd, prefix):
    """``range_all`` halves a page whose answer is over the cap, remembers the size that fitted,
    and reads every key at one revision; ``range_page`` stops at its limit and says more follow."""
    base = f"{prefix}/big/"
    for i in range(12):
        await etcd.put(f"{base}{i:02d}", b"v" * 250_000)
    async with Etcd([etcd_server.endpoint], max_message=CAP, page_keys=500) as small:
        with pytest.raises(Unavailable):
            await small.range(base)
        got = await small.range_all(base)
        assert [kv.key for kv in got.kvs] == [f"{base}{i:02d}" for i in range(12)]
        assert all(kv.mod_revision <= got.revision for kv in got.kvs)
        assert small._page_limits[base] <= 8  # learned: the next read does not start at 500
        page = await small.range_page(base, limit=5)
        assert len(page.kvs) == 5 and page.more
        rest = await small.range_page(base, after="04", limit=100)
        assert [kv.key[len(base) :] for kv in rest.kvs] == [f"{i:02d}" for i in range(5, 12)]
        assert not rest.more
