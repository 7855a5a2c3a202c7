"""/metrics parsed with prometheus_client's parser; the OpenAPI document is generated from the
code, valid, complete; schemathesis throws generated requests at every endpoint of a live node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from cluster.secretbox import new_key
from nodes.api.openapi import NOT_API
from nodes.devtools.embedded import EtcdProcess
from tests.api_helpers import JOBS, run_done
from tests.conftest import ProcessCluster, api_headers, wait_for


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


async def test_metrics_cover_runs_lag_queue_claims_leader_etcd_and_spawn(cluster):
    await cluster.start()
    job = {"name": "m1", "command": "echo hi", "schedules": [{"cron": "@every 1s"}]}
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body
    status, run = await cluster.request("POST", f"{JOBS}/m1/runs", json={})
    assert status == 201
    await run_done(cluster, run["id"])

    async def scheduled_run_started():
        status, text = await cluster.request("GET", "/metrics")
        assert status == 200
        s = samples(text)
        lag = [x for x in s.get("cronmesh_start_lag_seconds_count", []) if x.value >= 1]
        return s if lag else None

    s = await wait_for(scheduled_run_started, 30, what="a scheduled run started")
    finished = [
        x
        for x in s["cronmesh_job_runs_finished_total"]
        if x.labels == {"project": "default", "job": "m1", "status": "succeeded"}
    ]
    assert finished and finished[0].value >= 1
    assert any(x.value >= 1 for x in s["cronmesh_claims_total"] if x.labels["outcome"] == "won")
    assert s["cronmesh_is_leader"][0].value == 1
    assert s["cronmesh_leadership_acquired_total"][0].value >= 1
    assert "cronmesh_queue_depth" in s
    assert s["cronmesh_spawn_seconds_count"][0].value >= 1
    # every claim and every completion went through the worker's group commit (D137)
    assert s["cronmesh_worker_txn_batch_size_sum"][0].value >= 2
    methods = {x.labels["method"] for x in s["cronmesh_etcd_request_seconds_count"]}
    assert {"Range", "Txn", "LeaseGrant"} <= methods
    assert all(x.labels["outcome"] for x in s["cronmesh_etcd_request_seconds_count"])


async def test_openapi_document_is_generated_valid_and_lists_every_route(cluster):
    node = await cluster.start()
    status, doc = await cluster.request("GET", "/api/v1/openapi.json")
    assert status == 200
    validate(doc)
    from nodes.api.app import make_app

    app = make_app(node)
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method not in ("HEAD",)
        and not r.resource.canonical.startswith("/internal/")
        and r.resource.canonical not in NOT_API
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    job = doc["paths"]["/api/v1/projects/{project}/jobs"]["post"]
    ref = job["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/JobSpec"
    assert "overlap" in doc["components"]["schemas"]["JobSpec"]["properties"]

    def answer(path: str, method: str, status: str) -> str:
        content = doc["paths"][path][method]["responses"][status]["content"]
        return str(content["application/json"]["schema"]["$ref"]).rsplit("/", 1)[-1]

    # declarations belong to handlers, not names: two handlers called "trigger" differ
    base = "/api/v1/projects/{project}"
    assert answer(f"{base}/jobs/{{job}}/runs", "post", "201") == "Run"
    assert answer(f"{base}/workflows/{{workflow}}/executions", "post", "201") == "Execution"
    assert answer(f"{base}/executions/{{execution}}/cancel", "post", "200") == "Execution"
    assert answer(f"{base}/runs/{{run}}/cancel", "post", "202") == "Run"
    put_wf = doc["paths"][f"{base}/workflows/{{workflow}}"]["put"]
    assert {"200", "201"} <= set(put_wf["responses"])
    assert put_wf["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/WorkflowSpec"
    )
    assert "204" in doc["paths"]["/api/v1/users/{user}"]["delete"]["responses"]
    # every public route is declared (no loose "2XX") except those listed here on purpose
    loose = {
        (m, p)
        for p, ops in doc["paths"].items()
        for m, op in ops.items()
        if "2XX" in op["responses"]
    }
    assert not {x for x in loose if "/workflows" in x[1] or "/jobs" in x[1]}, loose


@pytest.fixture(scope="module")
def live_node(etcd_server: EtcdProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import asyncio

    import aiohttp

    tmp = tmp_path_factory.mktemp("schemathesis")
    c = ProcessCluster([etcd_server.endpoint], "/schemathesis", Path(tmp))
    # a node configured as in production: with a secrets key (else secret routes answer 503)
    key = Path(tmp) / "secrets.key"
    key.write_text(new_key() + "\n")
    key.chmod(0o600)
    node = c.start("fuzz", "--secrets-key-file", str(key))
    try:

        async def ready():
            async with (
                aiohttp.ClientSession(headers=api_headers()) as http,
                http.get(f"{node.url}/readyz") as resp,
            ):
                return resp.status == 200

        asyncio.run(wait_for(ready, 30, what="node ready"))
        yield node.url
    finally:
        c.close()


@pytest.mark.timeout(600)
def test_no_endpoint_answers_500(live_node):
    """Generated requests (valid and invalid) at every operation: never a server error."""
    schema = schemathesis.openapi.from_url(
        f"{live_node}/api/v1/openapi.json", headers=api_headers()
    )
    # logout revokes the token it is called with (the admin's): every later request would be a
    # 401 and check nothing (tests/security/test_fuzz_roles.py keeps a positive control for that)
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if (op.method.upper(), op.path) != ("POST", "/api/v1/auth/logout")
    ]
    assert len(operations) >= 20
    statuses: dict[str, set[int]] = {}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case):
            response = case.call_and_validate(
                base_url=live_node,
                headers=api_headers(),
                checks=[
                    not_a_server_error,
                    response_schema_conformance,
                    status_code_conformance,
                    content_type_conformance,
                ],
            )
            name = f"{case.operation.method.upper()} {case.operation.path}"
            statuses.setdefault(name, set()).add(response.status_code)

        fuzz()
    assert set(statuses) == {f"{op.method.upper()} {op.path}" for op in operations}
    assert all(code < 500 or code == 503 for codes in statuses.values() for code in codes)
    # the fuzzing reached past validation somewhere (not only 4xx answers)
    assert sum(1 for codes in statuses.values() if any(c < 300 for c in codes)) >= 5


async def test_etcd_observer_sees_every_call_with_its_outcome(etcd_server):
    from cluster.errors import CronmeshError
    from cluster.etcd import Etcd

    seen: list[tuple[str, str]] = []
    client = Etcd([etcd_server.endpoint], observer=lambda m, s, o: seen.append((m, o)))
    await client.connect()
    try:
        await client.put("/observer/k", "v")
        await client.get("/observer/k")
        with pytest.raises(CronmeshError):
            await client.put("/observer/k", "v", lease=0x1234)  # no such lease
    finally:
        await client.close()
    assert seen[:2] == [("Put", "ok"), ("Range", "ok")]
    assert seen[2][0] == "Put" and seen[2][1] not in ("ok", "cancelled")
