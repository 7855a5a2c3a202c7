"""Named hooks end to end on a real node and a real etcd (issue 24 item 2): a signed delivery
starts a run with the mapped parameters; a repeated Idempotency-Key returns the first run and
starts nothing; bad deliveries get a 4xx naming the problem; the per-hook rate answers 429 with
Retry-After; the seed's POST /register/{workflow} starts a workflow; the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from cluster.hooks import sign
from cluster.secretbox import new_key
from tests.conftest import ROOT, cli_env, run_cli, wait_for

P = "/api/v1/projects/default"
SECRET = "s3cret-for-the-hook-0123456789"


def key_file(tmp_path: Path) -> str:
    path = tmp_path / "secrets.key"
    path.write_text(new_key() + "\n")
    path.chmod(0o600)
    return str(path)


async def start(cluster, tmp_path: Path):
    return await cluster.start(secrets_key_file=key_file(tmp_path))


async def deliver(
    cluster,
    path: str,
    payload: object = None,
    *,
    secret: str | None = SECRET,
    ts: int | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
):
    """POST a delivery without user credentials, signed with ``secret`` unless None."""
    raw = body if body is not None else json.dumps(payload or {}).encode()
    hdrs = {"Content-Type": "application/json"}
    if secret is not None:
        stamp = int(time.time()) if ts is None else ts
        hdrs["X-Cronmesh-Signature"] = sign(secret.encode(), stamp, raw)
    hdrs.update(headers or {})
    async with (
        aiohttp.ClientSession() as http,
        http.post(cluster.url(path=path), data=io.BytesIO(raw), headers=hdrs) as resp,
    ):
        data = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, data, resp.headers


async def run_done(cluster, run_id: str) -> dict:
    async def done():
        _, run = await cluster.request("GET", f"{P}/runs/{run_id}")
        return run if run.get("finished_at") else None

    return await wait_for(done, 30, what=f"run {run_id} finished")


async def test_signed_delivery_maps_payload_and_idempotency_key_replays(cluster, tmp_path):
    await start(cluster, tmp_path)
    job = {"name": "deploy", "command": "env | grep ^CRONMESH_PARAM_ | sort", "parameters": {}}
    assert (await cluster.request("POST", f"{P}/jobs", json=job))[0] == 201
    hook = {
        "target": {"job": "deploy"},
        "parameters": {"repo": "repository.name", "sha": "commits.0.id", "n": "size"},
        "secret": SECRET,
    }
    status, body = await cluster.request("PUT", f"{P}/hooks/gh", json=hook)
    assert status == 201, body
    assert "secret" not in body and body["url"] == "/api/v1/hooks/default/gh"
    payload = {"repository": {"name": "web"}, "commits": [{"id": "abc123"}], "size": 3}

    status, out, headers = await deliver(
        cluster, "/api/v1/hooks/default/gh", payload, headers={"Idempotency-Key": "evt-1"}
    )
    assert status == 202, out
    assert out["replayed"] is False and out["run"]
    run = await run_done(cluster, out["run"])
    assert run["status"] == "succeeded" and run["source"] == "hook"
    assert run["parameters"] == {"repo": "web", "sha": "abc123", "n": "3"}
    _, text = await cluster.request("GET", f"{P}/runs/{out['run']}/logs")
    assert "CRONMESH_PARAM_REPO=web" in text and "CRONMESH_PARAM_SHA=abc123" in text

    # the same delivery again (a sender's retry, also re-signed): the first run, nothing new
    status, again, headers = await deliver(
        cluster, "/api/v1/hooks/default/gh", payload, headers={"Idempotency-Key": "evt-1"}
    )
    assert status == 202 and again["run"] == out["run"] and again["replayed"] is True
    assert headers["Idempotent-Replayed"] == "true"
    _, runs = await cluster.request("GET", f"{P}/runs?job=deploy")
    assert [r["id"] for r in runs["runs"]] == [out["run"]]
    # the same key with another body: refused, nothing started
    status, err, _ = await deliver(
        cluster, "/api/v1/hooks/default/gh", {"size": 4}, headers={"Idempotency-Key": "evt-1"}
    )
    assert status == 409 and err["error"]["field"] == "Idempotency-Key", err
    # the key is stored with a lease (etcd forgets it after about a day)
    node = cluster.nodes[0][0]
    res = await node.etcd.range(node.keys.hook_deliveries("default", "gh"))
    assert res.count == 1 and res.kvs[0].lease != 0
    remaining, granted = await node.etcd.time_to_live(res.kvs[0].lease)
    assert granted == 25 * 3600 and remaining > 24 * 3600  # forgotten after 24-25 h

    # a missing path sets nothing: the job's default applies (here: no parameter at all)
    status, out2, _ = await deliver(cluster, "/api/v1/hooks/default/gh", {"size": 1})
    assert status == 202
    assert (await run_done(cluster, out2["run"]))["parameters"] == {"n": "1"}


async def test_bad_deliveries_get_a_4xx_naming_the_problem(cluster, tmp_path):
    await start(cluster, tmp_path)
    assert (await cluster.request("POST", f"{P}/jobs", json={"name": "j", "command": "true"}))[
        0
    ] == 201
    hook = {"target": {"job": "j"}, "secret": SECRET, "max_body_bytes": 1000}
    assert (await cluster.request("PUT", f"{P}/hooks/h", json=hook))[0] == 201
    url = "/api/v1/hooks/default/h"

    status, err, _ = await deliver(cluster, url, {"a": 1}, secret="wrong-secret-0123456789")
    assert status == 401 and err["error"]["code"] == "unauthenticated"
    status, err, _ = await deliver(cluster, url, {"a": 1}, ts=int(time.time()) - 600)
    assert status == 401 and err["error"]["field"] == "X-Cronmesh-Signature.t"
    assert "old" in err["error"]["message"]
    status, err, _ = await deliver(cluster, url, {"a": 1}, ts=int(time.time()) + 600)
    assert status == 401 and "future" in err["error"]["message"]
    status, err, _ = await deliver(
        cluster, url, secret=None, headers={"X-Cronmesh-Signature": "sha256=abc"}
    )
    assert status == 400 and err["error"]["field"] == "X-Cronmesh-Signature"
    status, err, _ = await deliver(cluster, url, secret=None)
    assert status == 401 and err["error"]["field"] == "X-Cronmesh-Signature"
    status, err, _ = await deliver(cluster, url, {"a": "x" * 2000})
    assert status == 413 and err["error"]["field"] == "body"
    status, err, _ = await deliver(cluster, url, body=b"x" * (2 * 1024 * 1024))
    assert status == 413
    status, err, _ = await deliver(
        cluster, url, {"a": 1}, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 415 and err["error"]["field"] == "Content-Type"
    status, err, _ = await deliver(cluster, url, body=b"[1, 2]")
    assert status == 400 and "JSON object" in err["error"]["message"]
    status, err, _ = await deliver(cluster, url, {}, headers={"Idempotency-Key": "\u00e9"})
    assert status == 400 and err["error"]["field"] == "Idempotency-Key", err
    _, runs = await cluster.request("GET", f"{P}/runs?job=j")
    assert runs["runs"] == []  # nothing refused started a run


async def test_hook_documents_are_validated_and_secrets_write_only(cluster, tmp_path):
    await start(cluster, tmp_path)
    assert (await cluster.request("POST", f"{P}/jobs", json={"name": "j", "command": "true"}))[
        0
    ] == 201
    for doc, field in [
        ({"target": {"job": "missing"}}, "target.job"),
        ({"target": {"workflow": "missing"}}, "target.workflow"),
        ({"target": {"job": "j", "workflow": "w"}}, "target"),
        ({"target": {}}, "target"),
        ({"target": {"job": "j"}, "parameters": {"ok": "a..b"}}, "parameters.ok"),
        ({"target": {"job": "j"}, "parameters": {"1bad": "a"}}, "parameters.1bad"),
        ({"target": {"job": "j"}, "secret": "short"}, "secret"),
        ({"target": {"job": "j"}, "rate_per_minute": 0}, "rate_per_minute"),
        ({"target": {"job": "j"}, "max_body_bytes": 10**9}, "max_body_bytes"),
        ({"target": {"job": "j"}, "auth": "none"}, "auth"),
        ({"target": {"job": "j"}, "extra": 1}, "extra"),
    ]:
        status, body = await cluster.request("PUT", f"{P}/hooks/h", json=doc)
        assert status == 400 and body["error"]["field"] == field, (doc, body)
    status, body = await cluster.request("GET", f"{P}/hooks")
    assert body == {"hooks": [], "next": None}  # nothing half-written

    # no secret given: one is generated and answered once
    status, body = await cluster.request(
        "PUT", f"{P}/hooks/tok", json={"target": {"job": "j"}, "auth": "token"}
    )
    assert status == 201 and body["secret"].startswith("cmh_")
    token = body["secret"]
    status, got = await cluster.request("GET", f"{P}/hooks/tok")
    assert status == 200 and "secret" not in got and "ciphertext" not in got
    node = cluster.nodes[0][0]
    kv = await node.etcd.get(node.keys.hook("default", "tok"))
    assert token.encode() not in kv.value  # sealed at rest
    # replaced without a secret: the stored one is kept, and not answered
    status, body = await cluster.request(
        "PUT", f"{P}/hooks/tok", json={"target": {"job": "j"}, "auth": "token", "burst": 2}
    )
    assert status == 200 and "secret" not in body and body["burst"] == 2
    status, out, _ = await deliver(
        cluster,
        "/api/v1/hooks/default/tok",
        secret=None,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 202 and out["run"], out
    # a token hook does not take signatures (nor a signature hook tokens)
    status, _, _ = await deliver(cluster, "/api/v1/hooks/default/tok", secret=token)
    assert status == 401

    # paging and deletion
    for i in range(3):
        doc = {"target": {"job": "j"}, "secret": SECRET}
        assert (await cluster.request("PUT", f"{P}/hooks/p{i}", json=doc))[0] == 201
    _, page = await cluster.request("GET", f"{P}/hooks?limit=2")
    assert [h["name"] for h in page["hooks"]] == ["p0", "p1"] and page["next"] == "p1"
    _, page = await cluster.request("GET", f"{P}/hooks?limit=2&after=p1")
    assert [h["name"] for h in page["hooks"]] == ["p2", "tok"] and page["next"] is None
    assert (await cluster.request("DELETE", f"{P}/hooks/p0"))[0] == 204
    assert (await cluster.request("GET", f"{P}/hooks/p0"))[0] == 404
    assert (await cluster.request("DELETE", f"{P}/hooks/p0"))[0] == 404


async def test_rate_limit_answers_429_with_retry_after(cluster, tmp_path):
    await start(cluster, tmp_path)
    assert (await cluster.request("POST", f"{P}/jobs", json={"name": "j", "command": "true"}))[
        0
    ] == 201
    hook = {"target": {"job": "j"}, "secret": SECRET, "rate_per_minute": 1, "burst": 2}
    assert (await cluster.request("PUT", f"{P}/hooks/slow", json=hook))[0] == 201
    url = "/api/v1/hooks/default/slow"
    # a stranger's refused deliveries do not spend the hook's budget: they never reach it
    for _ in range(5):
        assert (await deliver(cluster, url, {}, secret="not-the-secret-0123456789"))[0] == 401
    assert (await deliver(cluster, url, {}))[0] == 202
    assert (await deliver(cluster, url, {}))[0] == 202
    status, err, headers = await deliver(cluster, url, {})
    assert status == 429 and err["error"]["field"] == "rate_per_minute"
    assert 1 <= int(headers["Retry-After"]) <= 60
    _, runs = await cluster.request("GET", f"{P}/runs?job=j")
    assert len(runs["runs"]) == 2
    _, text = await cluster.request("GET", "/metrics")
    assert 'cronmesh_hook_deliveries_total{outcome="refused",status="429"}' in text
    assert 'cronmesh_hook_deliveries_total{outcome="started",status="202"}' in text


async def test_register_alias_starts_a_workflow(cluster, tmp_path):
    await start(cluster, tmp_path)
    wf = {"name": "example", "tasks": [{"name": "a", "command": "true"}]}
    assert (await cluster.request("PUT", f"{P}/workflows/example", json=wf))[0] in (200, 201)
    doc = {"target": {"workflow": "example"}, "auth": "token", "secret": SECRET}
    assert (await cluster.request("PUT", f"{P}/hooks/example", json=doc))[0] == 201
    # the seed's request: POST with no body, now with the hook's token
    async with aiohttp.ClientSession() as http:
        async with http.post(
            cluster.url(path="/register/example"), headers={"Authorization": f"Bearer {SECRET}"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        assert body["status"] == "succeeded" and body["taskId"] == "example"
        _, ex = await cluster.request("GET", f"{P}/executions/{body['execution']}")
        assert ex["workflow"] == "example" and ex["source"] == "hook"
        # without the token: the same refusal as an unknown name
        async with http.post(cluster.url(path="/register/example")) as resp:
            assert resp.status == 401
        async with http.post(
            cluster.url(path="/register/nope"), headers={"Authorization": f"Bearer {SECRET}"}
        ) as resp:
            assert resp.status == 401


async def test_cli_hook_commands(cluster, tmp_path):
    await start(cluster, tmp_path)
    assert (await cluster.request("POST", f"{P}/jobs", json={"name": "j", "command": "true"}))[
        0
    ] == 201
    api = cluster.url()
    code, out, err = await asyncio.to_thread(
        run_cli, api, "hook", "set", "gh", "--job", "j", "--param", "repo=repository.name"
    )
    assert code == 0, err
    assert "secret (shown once):" in out
    secret = out.split("secret (shown once):", 1)[1].split()[0]
    code, out, err = await asyncio.to_thread(run_cli, api, "hook", "list")
    assert code == 0 and "gh" in out and secret not in out
    code, out, err = await asyncio.to_thread(run_cli, api, "-o", "json", "hook", "get", "gh")
    assert code == 0 and json.loads(out)["parameters"] == {"repo": "repository.name"}
    status, res, _ = await deliver(
        cluster, "/api/v1/hooks/default/gh", {"repository": {"name": "x"}}, secret=secret
    )
    assert status == 202, res
    payload = tmp_path / "event.json"
    payload.write_text('{"repository": {"name": "from-cli"}}')
    send = ("hook", "send", "gh", "-f", str(payload), "--idempotency-key", "cli-1")
    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nodes.cli", "--api", api, *send],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env=cli_env(CRONMESH_HOOK_SECRET=secret, CRONMESH_TOKEN=""),
        timeout=60,
    )
    assert res.returncode == 0 and res.stdout.startswith("started run "), res.stderr
    run_id = res.stdout.split()[2]
    _, run = await cluster.request("GET", f"{P}/runs/{run_id}")
    assert run["parameters"] == {"repo": "from-cli"} and run["source"] == "hook"
    code, out, err = await asyncio.to_thread(run_cli, api, "hook", "delete", "gh")
    assert code == 0, err
    code, out, err = await asyncio.to_thread(run_cli, api, "hook", "get", "gh")
    assert code != 0 and "not found" in err


async def test_idempotency_keys_are_bounded_per_hook(cluster, tmp_path, monkeypatch):
    monkeypatch.setattr("cluster.hook_store.MAX_IDEMPOTENCY_KEYS", 2)
    await start(cluster, tmp_path)
    assert (await cluster.request("POST", f"{P}/jobs", json={"name": "j", "command": "true"}))[
        0
    ] == 201
    doc = {"target": {"job": "j"}, "secret": SECRET}
    assert (await cluster.request("PUT", f"{P}/hooks/h", json=doc))[0] == 201
    url = "/api/v1/hooks/default/h"
    first = await deliver(cluster, url, {}, headers={"Idempotency-Key": "k1"})
    assert first[0] == 202
    assert (await deliver(cluster, url, {}, headers={"Idempotency-Key": "k2"}))[0] == 202
    # full: a new key is refused (never an old key dropped: a late retry would run twice)
    status, err, headers = await deliver(cluster, url, {}, headers={"Idempotency-Key": "k3"})
    assert status == 429 and err["error"]["field"] == "Idempotency-Key" and headers["Retry-After"]
    # a known key still answers its run; a delivery without a key still starts one
    again = await deliver(cluster, url, {}, headers={"Idempotency-Key": "k1"})
    assert again[0] == 202 and again[1]["run"] == first[1]["run"]
    assert (await deliver(cluster, url, {}))[0] == 202
    _, runs = await cluster.request("GET", f"{P}/runs?job=j")
    assert len(runs["runs"]) == 3
    # deleting the hook forgets its keys
    assert (await cluster.request("DELETE", f"{P}/hooks/h"))[0] == 204
    node = cluster.nodes[0][0]
    res = await node.etcd.range(node.keys.hook_deliveries("default", "h"), count_only=True)
    assert res.count == 0
