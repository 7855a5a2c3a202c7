"""The HTTP API of one in-process node against a real etcd: job documents (create, read,
update, delete), bad input and the 4xx naming its field, status/health/ready, node config.

Run control is in test_api_runs.py, scheduled firing in test_api_schedules.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.api_helpers import JOBS, RUNS
from tests.conftest import wait_for


async def test_job_crud_roundtrip(cluster):
    await cluster.start()
    job = {
        "name": "hello",
        "command": "echo hi",
        "schedules": [{"cron": "0 3 * * *"}],
        "tags": ["a"],
    }
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body
    assert body["project"] == "default" and body["tags"] == ["a"]
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 409 and body["error"]["code"] == "conflict"
    status, body = await cluster.request("PUT", f"{JOBS}/hello", json={**job, "description": "d"})
    assert status == 200 and body["description"] == "d"
    status, body = await cluster.request("PATCH", f"{JOBS}/hello", json={"enabled": False})
    assert status == 200 and body["enabled"] is False and body["description"] == "d"
    status, body = await cluster.request("GET", JOBS)
    assert [j["name"] for j in body["jobs"]] == ["hello"]
    status, _ = await cluster.request("DELETE", f"{JOBS}/hello")
    assert status == 204
    status, body = await cluster.request("GET", f"{JOBS}/hello")
    assert status == 404 and body["error"]["code"] == "job_not_found"


BAD_JOBS = [
    (b"{not json", "invalid", None),
    (b"[1, 2]", "invalid", None),
    (json.dumps({"name": "x", "command": "true", "colour": "red"}), "invalid", "colour"),
    (json.dumps({"name": "x", "command": "true", "retries": "many"}), "invalid", "retries"),
    (
        json.dumps({"name": "x", "command": "true", "schedules": [{"cron": "*/0 * * * *"}]}),
        "invalid",
        "schedules.0.cron",
    ),
    (
        json.dumps({"name": "x", "command": "true", "schedules": [{"cron": "1 2 3"}]}),
        "invalid",
        "schedules.0.cron",
    ),
    (
        json.dumps(
            {
                "name": "x",
                "command": "true",
                "schedules": [{"cron": "* * * * *", "timezone": "Nowhere/City"}],
            }
        ),
        "invalid",
        "schedules.0.timezone",
    ),
    (json.dumps({"name": "x", "command": "true", "timeout": -5}), "invalid", "timeout"),
    (json.dumps({"name": "x", "command": "x" * 70_000}), "invalid", "command"),
    (json.dumps({"name": "x"}), "invalid", None),
    (json.dumps({"name": "UPPER", "command": "true"}), "invalid", "name"),
    (json.dumps({"name": "x", "command": "true", "priority": 5000}), "invalid", "priority"),
    (
        json.dumps({"name": "x", "command": "true", "schedules": "0 * * * *"}),
        "invalid",
        "schedules",
    ),
]


@pytest.mark.parametrize(("body", "code", "field"), BAD_JOBS)
async def test_bad_job_documents_get_a_4xx_naming_the_field(cluster, body, code, field):
    if not cluster.nodes:
        await cluster.start()
    status, resp = await cluster.request(
        "POST", JOBS, data=body, headers={"Content-Type": "application/json"}
    )
    assert 400 <= status < 500, resp
    assert resp["error"]["code"] == code
    assert resp["error"]["field"] == field
    assert resp["error"]["message"]
    status, resp = await cluster.request("GET", JOBS)
    assert resp["jobs"] == []  # nothing half-written


async def test_other_bad_requests(cluster):
    await cluster.start()
    checks = [
        ("GET", f"{JOBS}/missing", None, 404, "name"),
        ("PATCH", f"{JOBS}/missing", {"enabled": False}, 404, "name"),
        ("DELETE", f"{JOBS}/missing", None, 404, "name"),
        ("POST", f"{JOBS}/missing/runs", {}, 404, "name"),
        ("GET", f"{RUNS}/123", None, 404, "run_id"),
        ("GET", f"{RUNS}/not-an-id", None, 400, "run"),
        ("POST", f"{RUNS}/123/cancel", None, 404, "run_id"),
        ("GET", f"{RUNS}/123/logs", None, 404, "run_id"),
        ("GET", f"{RUNS}?limit=abc", None, 400, "limit"),
        ("GET", f"{RUNS}?status=weird", None, 400, "status"),
        ("GET", "/api/v1/projects/Bad Project/jobs", None, 400, "project"),
        ("GET", "/api/v1/nope", None, 404, None),
        ("DELETE", JOBS, None, 405, None),
    ]
    for method, path, body, want, field in checks:
        status, resp = await cluster.request(method, path, json=body)
        assert status == want, (method, path, resp)
        assert resp["error"]["field"] == field, (method, path, resp)
    await cluster.request("POST", JOBS, json={"name": "j", "command": "true"})
    bad = [
        ("PATCH", f"{JOBS}/j", {"timeout": -1}, "timeout"),
        ("PATCH", f"{JOBS}/j", {"name": "other"}, "name"),
        ("PUT", f"{JOBS}/j", {"name": "k", "command": "true"}, "name"),
        ("POST", f"{JOBS}/j/runs", {"parameters": {"1bad": "x"}}, "parameters"),
        ("POST", f"{JOBS}/j/runs", {"params": {}}, "params"),
        ("POST", f"{JOBS}/j/backfill", {"from": "yesterday", "to": "2026-01-01T00:00:00Z"}, "from"),
        (
            "POST",
            f"{JOBS}/j/backfill",
            {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            None,
        ),
    ]
    for method, path, body, field in bad:
        status, resp = await cluster.request(method, path, json=body)
        assert status == 400, (method, path, resp)
        assert resp["error"]["field"] == field, (method, path, resp)
    status, job = await cluster.request("GET", f"{JOBS}/j")
    assert job["timeout"] == 0  # the rejected patch changed nothing
    _, runs = await cluster.request("GET", f"{RUNS}?job=j")
    assert runs["runs"] == []  # the rejected triggers and backfills created no run
    status, resp = await cluster.request(
        "POST",
        JOBS,
        data=io.BytesIO(b"x" * (2 * 1024 * 1024)),
        headers={"Content-Type": "application/json"},
    )
    assert status == 413 and resp["error"]["code"] == "too_large"


async def test_status_health_and_ready(cluster):
    node = await cluster.start()
    status, body = await cluster.request("GET", "/healthz")
    assert status == 200
    status, body = await cluster.request("GET", "/readyz")
    assert status == 200 and body["ready"] is True
    status, body = await wait_for(lambda: _leader(cluster), 10, what="leader")
    assert body["leader"] == "n1" and body["node"]["id"] == "n1"
    assert [n["id"] for n in body["nodes"]] == ["n1"] and body["nodes"][0]["up"] is True
    assert body["queue_depth"] == 0
    status, text = await cluster.request("GET", "/metrics")
    assert status == 200 and "cronmesh_claims" in text
    assert node.leading


async def _leader(cluster):
    status, body = await cluster.request("GET", "/status")
    return (status, body) if body.get("leader") else None


def test_node_config_precedence(tmp_path: Path):
    from nodes.config_sources import load_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "node_id: from-file\nlisten: 127.0.0.1:9000\ncapacity: 3\netcd: [http://a:1]\n"
    )
    env = {"CRONMESH_LISTEN": "127.0.0.1:9100", "CRONMESH_ETCD": "http://b:1,http://c:2"}
    cfg = load_config({"listen": "127.0.0.1:9200", "node_id": None}, env=env, file=str(cfg_file))
    assert cfg.node_id == "from-file" and cfg.capacity == 3
    assert cfg.etcd == ["http://b:1", "http://c:2"]
    assert cfg.listen == "127.0.0.1:9200"
    from cluster.errors import InvalidInput

    with pytest.raises(InvalidInput) as exc:
        load_config({"listen": "nowhere"}, env={})
    assert exc.value.field == "listen"


async def test_review_regressions_inputs_that_once_broke_things(cluster):
    await cluster.start()
    bad = [
        (
            "POST",
            JOBS,
            {"name": "x", "command": "true", "starting_deadline": 1e11},
            "starting_deadline",
        ),
        ("POST", "/api/v1/projects/abc%0A/jobs", {"name": "x", "command": "true"}, "project"),
        (
            "POST",
            JOBS,
            {"name": "x", "command": "true", "parameters": {f"p{i}": "v" for i in range(65)}},
            "parameters",
        ),
        (
            "POST",
            JOBS,
            {
                "name": "x",
                "command": "true",
                "description": "d" * 4000,
                "schedules": [
                    {"cron": f"{m} * * * *", "parameters": {f"p{i}": "v" * 4000 for i in range(64)}}
                    for m in (1, 2)
                ],
            },
            None,
        ),
    ]
    for method, path, body, field in bad:
        status, resp = await cluster.request(method, path, json=body)
        assert status == 400, (path, resp)
        assert resp["error"]["field"] == field, resp
    for raw in (b'{"name": "x", "command": "true", "timeout": Infinity}', b"[" * 200_000):
        status, resp = await cluster.request(
            "POST", JOBS, data=raw, headers={"Content-Type": "application/json"}
        )
        assert status == 400, resp
    await cluster.request(
        "POST", JOBS, json={"name": "bf", "command": "true", "schedules": [{"cron": "0 * * * *"}]}
    )
    for body, field in (
        ({"from": "0001-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"}, "to"),
    ):
        status, resp = await cluster.request("POST", f"{JOBS}/bf/backfill", json=body)
        assert status == 400 and resp["error"]["field"] == field, resp
    _, body = await cluster.request("GET", JOBS)
    assert [j["name"] for j in body["jobs"]] == ["bf"]
