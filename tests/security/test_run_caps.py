"""Issue 19 item 7: an operator filling etcd with runs (large parameters, triggers and backfills in
a loop). Parameters are capped per run, manual runs are rate-limited per project (429 with
Retry-After), unfinished runs are capped per project (403 ``quota_exceeded`` naming the cap), the
caps are set by a cluster admin only, and scheduled ticks are never refused (D173)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import yaml

from tests.conftest import api_headers, run_cli, wait_for
from tests.integration.test_access import make_user

A = "/api/v1/projects/a"
B = "/api/v1/projects/b"
NOWHERE = {"selector": "role=nowhere"}  # no node matches: runs stay pending


async def as_user(cluster, token: str, method: str, path: str, body=None):
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:
        async with http.request(method, cluster.url(None, path), json=body) as resp:
            data = await resp.json() if resp.content_type == "application/json" else None
            return resp.status, data, resp.headers


async def run_count(etcd, keys, project: str) -> int:
    return (await etcd.range(keys.runs(project), count_only=True)).count


async def test_trigger_parameters_are_capped_per_run(cluster, etcd, keys):
    """The review stored ~260 KB per trigger (64 parameters of 4 KiB): now 16 KiB per run."""
    await cluster.start()
    status, _ = await cluster.request("PUT", f"{A}/jobs/j", json={"name": "j", "command": "true"})
    assert status == 201
    op = await make_user(cluster, "op", {"a": "operator"})
    big = {f"p{i}": "x" * 4096 for i in range(64)}
    status, body, _ = await as_user(cluster, op, "POST", f"{A}/jobs/j/runs", {"parameters": big})
    assert status == 400 and body["error"]["field"] == "parameters", body
    assert "16384" in body["error"]["message"]
    assert await run_count(etcd, keys, "a") == 0
    fits = {f"p{i}": "x" * 4000 for i in range(4)}
    status, body, _ = await as_user(cluster, op, "POST", f"{A}/jobs/j/runs", {"parameters": fits})
    assert status == 201, body


async def test_triggers_and_backfills_are_rate_limited_per_project(cluster, etcd, keys):
    await cluster.start()
    for base in (A, B):
        job = {
            "name": "j",
            "command": "true",
            "target": NOWHERE,
            "schedules": [{"cron": "0 * * * *"}],
        }
        status, _ = await cluster.request("PUT", f"{base}/jobs/j", json=job)
        assert status == 201
    op = await make_user(cluster, "op", {"a": "operator", "b": "operator"})
    status, _ = await cluster.request(
        "PUT", f"{A}/run-limits", json={"runs_per_second": 0.05, "run_burst": 5}
    )
    assert status == 200
    for _ in range(5):
        status, body, _ = await as_user(cluster, op, "POST", f"{A}/jobs/j/runs", {})
        assert status == 201, body
    status, body, headers = await as_user(cluster, op, "POST", f"{A}/jobs/j/runs", {})
    assert status == 429 and body["error"]["field"] == "runs_per_second", body
    assert int(headers["Retry-After"]) >= 1
    assert await run_count(etcd, keys, "a") == 5  # the refused trigger wrote nothing
    # a backfill counts one per tick, and more ticks than the burst can never pass
    window = {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T09:30:00Z"}  # 10 ticks
    status, body, _ = await as_user(cluster, op, "POST", f"{A}/jobs/j/backfill", window)
    assert status == 403 and body["error"]["field"] == "run_burst", body
    assert await run_count(etcd, keys, "a") == 5
    # another project has its own budget (the defaults)
    status, body, _ = await as_user(cluster, op, "POST", f"{B}/jobs/j/backfill", window)
    assert status == 201 and len(body["created"]) == 10, body


async def test_unfinished_runs_are_capped_and_only_a_cluster_admin_lifts_the_cap(
    cluster, etcd, keys
):
    await cluster.start()
    job = {"name": "j", "command": "true", "target": NOWHERE, "schedules": [{"cron": "0 * * * *"}]}
    status, _ = await cluster.request("PUT", f"{A}/jobs/j", json=job)
    assert status == 201
    op = await make_user(cluster, "op", {"a": "operator"})
    owner = await make_user(cluster, "owner", {"a": "admin"})
    status, body, _ = await as_user(
        cluster, owner, "PUT", f"{A}/run-limits", {"max_pending_runs": 100000}
    )
    assert status == 403, body  # a project admin cannot lift its own cap
    status, _ = await cluster.request("PUT", f"{A}/run-limits", json={"max_pending_runs": 3})
    assert status == 200
    status, body, _ = await as_user(cluster, op, "GET", f"{A}/run-limits")
    assert status == 200 and body["effective"]["max_pending_runs"] == 3, body
    for _ in range(3):
        status, body, _ = await as_user(cluster, op, "POST", f"{A}/jobs/j/runs", {})
        assert status == 201, body
    status, body, _ = await as_user(cluster, op, "POST", f"{A}/jobs/j/runs", {})
    assert status == 403, body
    assert body["error"]["code"] == "quota_exceeded"
    assert body["error"]["field"] == "max_pending_runs", body
    window = {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T01:00:00Z"}
    status, body, _ = await as_user(cluster, op, "POST", f"{A}/jobs/j/backfill", window)
    assert status == 403 and body["error"]["field"] == "max_pending_runs", body
    assert await run_count(etcd, keys, "a") == 3
    # cluster-wide defaults apply where a project has no override
    status, _ = await cluster.request("PUT", "/api/v1/settings/run-limits", json={"run_burst": 2})
    assert status == 200
    status, body = await cluster.request("GET", f"{A}/run-limits")
    assert body["effective"] == {"max_pending_runs": 3, "runs_per_second": 5.0, "run_burst": 2}
    status, _ = await cluster.request("DELETE", f"{A}/run-limits")
    assert status == 204
    status, body, _ = await as_user(cluster, op, "POST", f"{A}/jobs/j/runs", {})
    assert status == 201, body  # back to the default cap (2000)


async def test_scheduled_ticks_are_not_refused_by_the_caps(cluster, etcd, keys):
    """The leader's ticks pass the pending cap: with the cap full, scheduled runs keep coming
    (a refused tick would be lost); only manual runs are refused."""
    await cluster.start()
    status, _ = await cluster.request("PUT", f"{A}/run-limits", json={"max_pending_runs": 1})
    assert status == 200
    job = {
        "name": "tick",
        "command": "true",
        "target": NOWHERE,
        "schedules": [{"cron": "@every 1s"}],
    }
    status, body = await cluster.request("PUT", f"{A}/jobs/tick", json=job)
    assert status == 201, body

    async def scheduled():
        res = await etcd.range(keys.runs("a"))
        runs = [json.loads(kv.value) for kv in res.kvs]
        return len([r for r in runs if r["source"] == "schedule"]) >= 3

    await wait_for(scheduled, 30, what="scheduled runs past the pending cap")
    status, body = await cluster.request("POST", f"{A}/jobs/tick/runs", json={})
    assert status == 403 and body["error"]["field"] == "max_pending_runs", body


async def test_cli_sets_the_allow_list_and_the_caps(cluster):
    await cluster.start()
    url = cluster.url()

    def cli(*args: str) -> tuple[int, str, str]:
        return run_cli(url, *args)

    code, out, err = await asyncio.to_thread(
        cli, "settings", "webhooks", "--allow", "10.0.0.0/8", "--allow", "hooks.corp:443"
    )
    assert code == 0, err
    assert yaml.safe_load(out) == {"allow": ["10.0.0.0/8", "hooks.corp:443"]}  # YAML (D253)
    code, out, err = await asyncio.to_thread(cli, "settings", "webhooks", "--allow", "bad entry!")
    assert code == 1 and "field: allow" in err
    code, out, err = await asyncio.to_thread(
        cli, "-p", "a", "settings", "run-limits", "--project-override", "--max-pending-runs", "7"
    )
    assert code == 0, err
    assert yaml.safe_load(out)["effective"]["max_pending_runs"] == 7
    code, out, err = await asyncio.to_thread(cli, "settings", "run-limits", "--run-burst", "9")
    assert code == 0 and yaml.safe_load(out)["run_burst"] == 9, err
    code, out, err = await asyncio.to_thread(
        cli, "-p", "a", "settings", "run-limits", "--project-override", "--clear"
    )
    assert code == 0, err
    status, body = await cluster.request("GET", f"{A}/run-limits")
    assert body["effective"] == {"max_pending_runs": 2000, "runs_per_second": 5.0, "run_burst": 9}


async def test_a_new_project_of_a_deleted_ones_name_starts_from_the_defaults(cluster):
    """Raised caps and default notification rules of a deleted project are not inherited."""
    await cluster.start()
    status, _ = await cluster.request("POST", "/api/v1/projects", json={"name": "gone"})
    assert status == 201
    gone = "/api/v1/projects/gone"
    await cluster.request("PUT", f"{gone}/run-limits", json={"max_pending_runs": 999999})
    rules = {"rules": [{"email": {"to": ["old-owner@example.com"]}}]}
    status, _ = await cluster.request("PUT", f"{gone}/notifications", json=rules)
    assert status == 200
    status, _ = await cluster.request("DELETE", gone)
    assert status == 204
    status, _ = await cluster.request("POST", "/api/v1/projects", json={"name": "gone"})
    assert status == 201
    _, body = await cluster.request("GET", f"{gone}/run-limits")
    assert body["effective"]["max_pending_runs"] == 2000
    _, body = await cluster.request("GET", f"{gone}/notifications")
    assert body == {"rules": []}
