"""Packed logs (D440) never mix projects, and a record's pointer cannot lead to another project's
pack: with a real SeaweedFS S3 server, real etcd and a real node.

Attack 1: many runs of projects ``a`` and ``b`` finish together on one node; if packs were per
node, a's logs would share an object with b's secret output (anyone given a's bucket prefix, or
a lifecycle rule per project, would then hold b's). Every pack must hold one project's logs,
under that project's prefix.

Attack 2: a run record of ``a`` whose ``log`` points into b's pack (written straight into etcd,
as an operator's restore of the wrong backup or a compromised peer might): reading a's log must
not return b's bytes.
"""

from __future__ import annotations

import json

from tests.conftest import wait_for
from tests.integration.test_logs_s3 import PACK_POINTER, new_bucket, s3_client

SECRET = "b-secret-in-a-pack-51c9"


async def _run(cluster, project: str, job: str, command: str) -> dict:
    status, body = await cluster.request(
        "PUT", f"/api/v1/projects/{project}/jobs/{job}", json={"name": job, "command": command}
    )
    assert status in (200, 201), body
    status, run = await cluster.request(
        "POST", f"/api/v1/projects/{project}/jobs/{job}/runs", json={}
    )
    assert status == 201, run

    async def done():
        s, r = await cluster.request("GET", f"/api/v1/projects/{project}/runs/{run['id']}")
        return r if s == 200 and r["status"] == "succeeded" else None

    return await wait_for(done, 30, what=f"{project}'s run")


async def test_packs_hold_one_projects_logs_and_a_pointer_cannot_cross_projects(
    cluster, s3_server, monkeypatch
):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    bucket = new_bucket(s3_server)
    node = await cluster.start(log_store=f"s3://{bucket}/logs", log_pack_window=0.5)
    a_runs = [await _run(cluster, "a", "ajob", "echo a-output") for _ in range(3)]
    b_runs = [await _run(cluster, "b", "bjob", f"echo {SECRET}") for _ in range(3)]
    spool = node.logs.spool
    await wait_for(lambda: not list(spool.root.rglob("*.spool")), 20, what="packs written")
    client = s3_client(s3_server)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="logs/")["Contents"]]
    assert keys and all("/_packs/" in k for k in keys), keys
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        heads = [line for line in body.splitlines() if line.startswith("== ")]
        if key.startswith("logs/a/_packs/"):
            assert SECRET not in body and all(h.startswith("== ajob/") for h in heads), body
        else:
            assert key.startswith("logs/b/_packs/") and all(h.startswith("== bjob/") for h in heads)
    # attack 2: a's record pointing into b's pack
    b_ptr = b_runs[0]["attempts"][0]["log"]
    assert PACK_POINTER.fullmatch(b_ptr)
    victim = a_runs[0]
    key = node.keys.run("a", victim["id"])
    doc = json.loads((await node.etcd.get(key)).value)
    doc["attempts"][0]["log"] = b_ptr
    await node.etcd.put(key, json.dumps(doc))
    status, rec = await cluster.request("GET", f"/api/v1/projects/a/runs/{victim['id']}")
    assert status == 200 and rec["attempts"][0]["log"] == b_ptr  # the forged record is served
    status, text = await cluster.request("GET", f"/api/v1/projects/a/runs/{victim['id']}/logs")
    assert SECRET not in text and status in (404, 200), (status, text)
    for query in ("?tail=5", "?format=json", "?offset=0&length=100"):
        status, text = await cluster.request(
            "GET", f"/api/v1/projects/a/runs/{victim['id']}/logs{query}"
        )
        assert SECRET not in json.dumps(text), (query, status, text)
    # an honest record of a still reads its own member
    status, text = await cluster.request("GET", f"/api/v1/projects/a/runs/{a_runs[1]['id']}/logs")
    assert status == 200 and text.endswith(" stdout a-output\n"), text
