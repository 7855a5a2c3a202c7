"""Project secrets against a real etcd and real nodes: write-only API (no answer, audit entry,
export or node log line holds a value or its ciphertext), encryption bound to project and name,
references checked, deletion of a used secret refused, key rotation, and masking of a job that
prints its secret byte by byte (live follow, stored log, API, result)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from cluster.secret_store import SecretStore
from cluster.secretbox import KeyRing, SecretUnreadable, new_key
from tests.conftest import ROOT, api_headers, api_session, cli_env, run_cli, wait_for

P = "/api/v1/projects/default"
VALUE = "pw-Zq8!x7#hunter2"  # printable, with characters a shell or a regex would care about


def key_file(path: Path, *keys: str) -> str:
    """Write a key ring through a rename (a new inode, as a Kubernetes Secret update is)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in keys))
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return str(path)


async def run_done(cluster, run_id: str, timeout: float = 30) -> dict:
    async def done():
        _, run = await cluster.request("GET", f"{P}/runs/{run_id}")
        return run if run.get("finished_at") else None

    return await wait_for(done, timeout, what=f"run {run_id} finished")


def assert_nowhere(text: str, *needles: str) -> None:
    for needle in needles:
        assert needle not in text, f"{needle!r} leaked"


async def test_secrets_api_is_write_only_and_references_are_checked(cluster, tmp_path):
    keys = key_file(tmp_path / "secrets.key", new_key())
    await cluster.start(secrets_key_file=keys)
    status, body = await cluster.request("PUT", f"{P}/secrets/db-password", json={"value": VALUE})
    assert status == 201, body
    assert set(body) == {"name", "key_id", "created_at", "updated_at", "updated_by"}
    assert body["updated_by"] == "admin"
    status, body = await cluster.request(
        "PUT", f"{P}/secrets/api-token", json={"value_base64": base64.b64encode(b"t0k").decode()}
    )
    assert status == 201, body

    # at rest: sealed, never the plaintext
    node = cluster.nodes[0][0]
    kv = await node.etcd.get(node.keys.secret("default", "db-password"))
    record = json.loads(kv.value)
    assert VALUE.encode() not in kv.value and record["ciphertext"]
    ciphertext = record["ciphertext"]

    # bad input: a clear 4xx naming the field, nothing stored
    for path, doc, field in [
        (f"{P}/secrets/db-password", {"value": "x" * 16385}, "value"),
        (f"{P}/secrets/db-password", {"value": ""}, "value"),
        (f"{P}/secrets/db-password", {"value": "a", "value_base64": "YQ=="}, "value"),
        (f"{P}/secrets/db-password", {"value_base64": "***"}, "value_base64"),
        (f"{P}/secrets/db-password", {"value": "a", "other": 1}, "other"),
        (f"{P}/secrets/Bad%20Name", {"value": "a"}, "name"),
    ]:
        status, body = await cluster.request("PUT", path, json=doc)
        assert status == 400 and body["error"]["field"] == field, (doc, body)
    status, body = await cluster.request("PUT", f"{P}/secrets/big", data=b"x" * 200_000)
    assert status == 400 and body["error"]["field"] == "value", body

    # names and metadata only, paged
    status, page = await cluster.request("GET", f"{P}/secrets?limit=1")
    assert status == 200 and [s["name"] for s in page["secrets"]] == ["api-token"]
    status, page2 = await cluster.request("GET", f"{P}/secrets?limit=1&after={page['next']}")
    assert [s["name"] for s in page2["secrets"]] == ["db-password"] and page2["next"] is None

    # references: unknown -> 400 naming the field, nothing stored
    job = {"name": "uses", "command": "true", "env": {"DB_PASSWORD": {"secret": "nope"}}}
    status, body = await cluster.request("PUT", f"{P}/jobs/uses", json=job)
    assert status == 400 and body["error"]["field"] == "env.DB_PASSWORD.secret", body
    assert (await cluster.request("GET", f"{P}/jobs/uses"))[0] == 404
    wf = {
        "name": "wf",
        "tasks": [{"name": "a", "command": "true", "env": {"T": {"secret": "nope"}}}],
    }
    status, body = await cluster.request("PUT", f"{P}/workflows/wf", json=wf)
    assert status == 400 and body["error"]["field"] == "tasks.0.env.T.secret", body
    status, body = await cluster.request(
        "PATCH", f"{P}/jobs/absent", json={"env": {"X": {"secret": "nope"}}}
    )
    assert status == 404, body

    job["env"]["DB_PASSWORD"] = {"secret": "db-password"}
    assert (await cluster.request("PUT", f"{P}/jobs/uses", json=job))[0] == 201
    wf["tasks"][0]["env"]["T"] = {"secret": "api-token"}
    assert (await cluster.request("PUT", f"{P}/workflows/wf", json=wf))[0] == 201
    status, body = await cluster.request(
        "PATCH", f"{P}/jobs/uses", json={"env": {"X": {"secret": "nope"}}}
    )
    assert status == 400 and body["error"]["field"] == "env.X.secret", body

    # a used secret cannot be deleted: 409 naming its users
    status, body = await cluster.request("DELETE", f"{P}/secrets/db-password")
    assert status == 409 and "job uses" in body["error"]["message"], body
    status, body = await cluster.request("DELETE", f"{P}/secrets/api-token")
    assert status == 409 and "workflow wf" in body["error"]["message"], body
    assert (await cluster.request("DELETE", f"{P}/jobs/uses"))[0] == 204
    assert (await cluster.request("DELETE", f"{P}/secrets/db-password"))[0] == 204
    assert (await cluster.request("DELETE", f"{P}/secrets/db-password"))[0] == 404

    # nothing the API shows holds the value or its ciphertext: audit included
    seen = []
    for path in (f"{P}/secrets", "/api/v1/audit?limit=1000", f"{P}/workflows/wf"):
        status, body = await cluster.request("GET", path)
        assert status == 200
        seen.append(json.dumps(body))
    audit = seen[1]
    assert "/secrets/db-password" in audit  # the change is audited ...
    assert_nowhere("\n".join(seen), VALUE, ciphertext, base64.b64encode(b"t0k").decode())


async def test_viewer_lists_names_but_cannot_set(cluster, tmp_path):
    await cluster.start(secrets_key_file=key_file(tmp_path / "k", new_key()))
    await cluster.request("PUT", f"{P}/secrets/s", json={"value": VALUE})
    await cluster.request(
        "POST", "/api/v1/users", json={"name": "v", "roles": {"default": "viewer"}}
    )
    _, tok = await cluster.request("POST", "/api/v1/users/v/tokens", json={})
    async with aiohttp.ClientSession(headers=api_headers(tok["token"])) as http:
        async with http.get(cluster.url(None, f"{P}/secrets")) as resp:
            assert resp.status == 200
            assert VALUE not in await resp.text()
        async with http.put(cluster.url(None, f"{P}/secrets/s"), json={"value": "x"}) as resp:
            assert resp.status == 403
        async with http.post(cluster.url(None, "/api/v1/secrets/rotate")) as resp:
            assert resp.status == 403


async def test_a_sealed_value_copied_to_another_project_or_name_does_not_decrypt(etcd, keys):
    """An attacker with etcd write access moves a ciphertext to a key they can use."""
    ring = KeyRing.parse(new_key())
    store = SecretStore(etcd, keys, lambda: __import__("datetime").datetime.now(), lambda: ring)
    await store.put("a", "db", VALUE.encode())
    raw = (await etcd.get(keys.secret("a", "db"))).value
    await etcd.put(keys.secret("b", "db"), raw)  # another project
    await etcd.put(keys.secret("a", "db2"), raw)  # another name
    assert await store.values("a", ["db"]) == {"db": VALUE.encode()}
    with pytest.raises(SecretUnreadable):
        await store.values("b", ["db"])
    with pytest.raises(SecretUnreadable):
        await store.values("a", ["db2"])


async def test_no_key_refuses_to_set_and_fails_runs_clearly(cluster):
    await cluster.start()
    status, body = await cluster.request("PUT", f"{P}/secrets/s", json={"value": VALUE})
    assert status == 503 and body["error"]["code"] == "secrets_key_missing", body
    assert "--secrets-key-file" in body["error"]["message"]
    # a secret sealed elsewhere (here: put straight into etcd) cannot be used on this node
    node = cluster.nodes[0][0]
    other = SecretStore(node.etcd, node.keys, node.clock, lambda: KeyRing.parse(new_key()))
    await other.put("default", "s", VALUE.encode())
    job = {"name": "j", "command": "echo hi", "env": {"S": {"secret": "s"}}}
    assert (await cluster.request("PUT", f"{P}/jobs/j", json=job))[0] == 201
    _, run = await cluster.request("POST", f"{P}/jobs/j/runs", json={})
    run = await run_done(cluster, run["id"])
    assert run["status"] == "failed" and "secrets key" in run["error"], run


async def test_key_rotation_procedure(cluster, tmp_path):
    """docs/security.md "Rotating the key": add the new key second on every node, move it first,
    `cronmesh secret rotate`, check no value is left under the old key, remove the old key."""
    old, new = new_key(), new_key()
    path = tmp_path / "secrets.key"
    key_file(path, old)
    await cluster.start(secrets_key_file=str(path))
    node = cluster.nodes[0][0]
    old_id, new_id = KeyRing.parse(old).current, KeyRing.parse(new).current
    await cluster.request("PUT", "/api/v1/projects/one/secrets/a", json={"value": "va"})
    await cluster.request("PUT", "/api/v1/projects/two/secrets/b", json={"value": "vb"})

    key_file(path, old, new)  # 1. the new key is known (reads), the old one still seals
    status, body = await cluster.request("GET", "/status")  # each node shows the keys it holds
    assert body["node"]["secrets"] == {
        "key_file": True,
        "current_key": old_id,
        "keys": [old_id, new_id],
    }
    status, body = await cluster.request(
        "PUT", "/api/v1/projects/one/secrets/c", json={"value": "vc"}
    )
    assert body["key_id"] == old_id
    key_file(path, new, old)  # 2. promoted: new values are sealed with it
    status, body = await cluster.request("POST", "/api/v1/secrets/rotate?dry_run=1")
    assert status == 200 and body["values_by_key"] == {old_id: 3} and body["rotated"] == 0
    status, body = await cluster.request("POST", "/api/v1/secrets/rotate")  # 3. re-seal
    assert status == 200, body
    assert body["rotated"] == 3 and body["values_by_key"] == {new_id: 3} and not body["failed"]
    for project, name in (("one", "a"), ("two", "b"), ("one", "c")):
        kv = await node.etcd.get(node.keys.secret(project, name))
        assert json.loads(kv.value)["key_id"] == new_id
    status, body = await cluster.request("POST", "/api/v1/secrets/rotate")  # idempotent
    assert body["rotated"] == 0
    key_file(path, new)  # 4. the old key is gone: every value still opens
    values = await node.secrets.values("one", ["a", "c"])
    assert values == {"a": b"va", "c": b"vc"}
    assert await node.secrets.values("two", ["b"]) == {"b": b"vb"}


SLOW_PRINT = r"""
import hashlib, json, os, sys, time
v = os.environ["DB_PASSWORD"]
for c in v:
    sys.stdout.write(c); sys.stdout.flush(); time.sleep(0.03)
    sys.stderr.write(c); sys.stderr.flush()
print("\nsha", hashlib.sha256(v.encode()).hexdigest(), "plain", os.environ["PLAIN"], flush=True)
print("again:", v, "and half", v[:5], flush=True)
with open(os.environ["CRONMESH_RESULT_FILE"], "w") as f:
    json.dump({"leak": "x" + v + "y", v: 1}, f)
"""


@pytest.mark.timeout(120)
async def test_a_job_printing_its_secret_byte_by_byte_shows_only_masks(procs, tmp_path):
    keys = key_file(tmp_path / "secrets.key", new_key())
    node = procs.start("sec-1", "--secrets-key-file", keys)
    script = tmp_path / "slow_print.py"
    script.write_text(SLOW_PRINT)
    async with api_session() as http:
        await wait_for(lambda: _ready(http, node.url), 30, what="node ready")
        url = node.url + P
        async with http.put(f"{url}/secrets/db-password", json={"value": VALUE}) as resp:
            assert resp.status == 201
        job = {
            "name": "leaky",
            "command": f"{sys.executable} {script}",
            "env": {"DB_PASSWORD": {"secret": "db-password"}, "PLAIN": "visible"},
        }
        async with http.put(f"{url}/jobs/leaky", json=job) as resp:
            assert resp.status == 201, await resp.text()
        async with http.post(f"{url}/jobs/leaky/runs", json={}) as resp:
            run = await resp.json()
        # live follow while it prints, byte by byte
        timeout = aiohttp.ClientTimeout(total=60)
        async with http.get(f"{url}/runs/{run['id']}/logs?follow=1", timeout=timeout) as resp:
            assert resp.status == 200
            live = (await resp.read()).decode()

        async def finished():
            async with http.get(f"{url}/runs/{run['id']}") as r:
                body = await r.json()
                return body if body.get("finished_at") else None

        record = await wait_for(finished, 30, what="run finished")
        async with http.get(f"{url}/runs/{run['id']}/logs") as resp:
            stored = await resp.text()
        async with http.get(f"{url}/runs/{run['id']}/logs?format=json") as resp:
            as_json = await resp.text()
        async with http.get(f"{url}/jobs/leaky") as resp:
            job_doc = await resp.text()
        async with http.get(f"{node.url}/api/v1/audit?limit=1000") as resp:
            audit = await resp.text()

    assert record["status"] == "succeeded", record
    digest = hashlib.sha256(VALUE.encode()).hexdigest()
    for text in (live, stored):
        assert f"sha {digest} plain visible" in text, text  # the job did get the value
        assert "again: ***" in text and "***" in text.split("sha")[0]
    # the log object in the store (archived), read straight from the node's data folder
    objects = [p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert objects
    record_text = json.dumps(record)
    assert record["result"] == {"leak": "x***y", "***": 1}
    rc, export_out, err = await asyncio.to_thread(
        run_cli, node.url, "export", str(tmp_path / "export")
    )
    assert rc == 0, err
    exported = "".join(p.read_text() for p in (tmp_path / "export").rglob("*") if p.is_file())
    node.stop()
    node_log = await asyncio.to_thread(Path(node.log_path).read_text)
    for text in (live, stored, as_json, record_text, job_doc, audit, exported, node_log):
        assert_nowhere(text, VALUE, VALUE[:6])
    for blob in objects:
        assert VALUE.encode() not in blob


async def _ready(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url + "/readyz") as resp:
        return resp.status == 200


def test_cli_set_list_delete_and_keygen(procs, tmp_path):
    keys = key_file(tmp_path / "secrets.key", new_key())
    node = procs.start("sec-cli", "--secrets-key-file", keys)

    async def ready():
        async with api_session() as http:
            return await _ready(http, node.url)

    asyncio.run(wait_for(ready, 30, what="node ready"))
    value_file = tmp_path / "v"
    value_file.write_bytes(b"from-a-file\n")
    rc, out, err = run_cli(node.url, "secret", "set", "one", "--from-file", str(value_file))
    assert rc == 0 and "12 bytes" in out, err
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodes.cli",
            "--api",
            node.url,
            "secret",
            "set",
            "two",
            "--value-stdin",
        ],
        input=b"typed\n",
        capture_output=True,
        cwd=str(ROOT),
        env=cli_env(),
        timeout=30,
    )
    assert res.returncode == 0 and b"5 bytes" in res.stdout, res.stderr
    rc, out, err = run_cli(node.url, "secret", "list")
    assert rc == 0 and "one" in out and "two" in out and "typed" not in out, err
    rc, out, err = run_cli(node.url, "secret", "delete", "one")
    assert rc == 0, err
    rc, out, err = run_cli(node.url, "secret", "get", "one")
    assert rc == 1 and "not found" in err
    rc, out, _ = run_cli(node.url, "secret", "keygen")
    assert rc == 0 and len(base64.b64decode(out.strip())) == 32


async def test_workflow_tasks_and_binary_values_are_injected_and_masked(cluster, tmp_path):
    from tests.integration.test_workflows import finished, trigger

    await cluster.start(secrets_key_file=key_file(tmp_path / "k", new_key()))
    binary = b"\xfe\xffAB"  # not UTF-8: goes into env byte for byte
    body = {"value_base64": base64.b64encode(binary).decode()}
    assert (await cluster.request("PUT", f"{P}/secrets/bin", json=body))[0] == 201
    assert (await cluster.request("PUT", f"{P}/secrets/tok", json={"value": VALUE}))[0] == 201
    wf = {
        "name": "uses-secrets",
        "tasks": [
            {
                "name": "a",
                "command": 'printf "%s" "$B" | od -An -tx1; echo "token=$T"; '
                'echo "{\\"t\\": \\"$T\\"}" > "$CRONMESH_RESULT_FILE"',
                "env": {"B": {"secret": "bin"}, "T": {"secret": "tok"}},
            },
            {"name": "b", "command": 'echo "upstream=$CRONMESH_RESULT_A"', "depends_on": ["a"]},
        ],
    }
    assert (await cluster.request("PUT", f"{P}/workflows/uses-secrets", json=wf))[0] == 201
    ex = await finished(cluster, await trigger(cluster, "uses-secrets"))
    assert ex["status"] == "succeeded", ex
    logs = {}
    for task in ("a", "b"):
        run_id = ex["tasks"][task]["run_id"]
        status, logs[task] = await cluster.request("GET", f"{P}/runs/{run_id}/logs")
        assert status == 200
    assert "fe ff 41 42" in logs["a"] and "token=***" in logs["a"], logs
    assert '"t": "***"' in logs["b"].replace('\\"', '"'), logs  # the masked result flowed on
    assert_nowhere(json.dumps(ex) + logs["a"] + logs["b"], VALUE)


async def test_a_reference_written_during_a_deletion_wins(etcd, keys):
    """The deletion scans jobs, then deletes; a job that starts referencing the secret between
    the two makes the deletion's range compare fail, and the re-scan refuses with 409."""
    from datetime import UTC, datetime

    from cluster.errors import Conflict
    from cluster.ids import Snowflake
    from cluster.models import JobSpec
    from cluster.store import Store

    ring = KeyRing.parse(new_key())
    secrets = SecretStore(etcd, keys, lambda: datetime.now(UTC), lambda: ring)
    store = Store(etcd, keys, Snowflake(1), lambda: datetime.now(UTC))
    await secrets.put("p", "db", b"v")
    scan = secrets.users
    raced = []

    async def users_then_a_write(project, name):
        found = await scan(project, name)
        if not raced:
            spec = JobSpec(name="late", command="true", env={"DB": {"secret": "db"}})
            raced.append(await store.put_job("p", spec))
        return found

    secrets.users = users_then_a_write  # type: ignore[method-assign]
    with pytest.raises(Conflict, match="job late"):
        await secrets.delete("p", "db")
    assert raced and await etcd.get(keys.secret("p", "db")) is not None
