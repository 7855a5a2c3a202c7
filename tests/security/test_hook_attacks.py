"""Attacks on named hooks (issue 24 item 2; docs/security.md, "Tested attacks"): hook-name
enumeration, forgery, replay, cross-project use of a hook's secret, reading a secret back, and
the audit of refused deliveries. Real etcd, real node."""

from __future__ import annotations

import io
import json
import time

import aiohttp

from cluster.hooks import sign
from cluster.secretbox import new_key
from tests.conftest import api_headers, wait_for

SECRET_A = "secret-of-project-a-0123456789"
SECRET_B = "secret-of-project-b-9876543210"


async def start(cluster, tmp_path):
    path = tmp_path / "secrets.key"
    path.write_text(new_key() + "\n")
    path.chmod(0o600)
    return await cluster.start(secrets_key_file=str(path))


async def setup(cluster) -> None:
    for project, secret in (("a", SECRET_A), ("b", SECRET_B)):
        job = {"name": "j", "command": "true"}
        status, body = await cluster.request("POST", f"/api/v1/projects/{project}/jobs", json=job)
        assert status == 201, body
        hook = {"target": {"job": "j"}, "secret": secret}
        status, body = await cluster.request(
            "PUT", f"/api/v1/projects/{project}/hooks/h", json=hook
        )
        assert status == 201, body


async def post(cluster, path: str, raw: bytes, headers: dict[str, str]):
    hdrs = {"Content-Type": "application/json", **headers}
    async with (
        aiohttp.ClientSession() as http,
        http.post(cluster.url(path=path), data=io.BytesIO(raw), headers=hdrs) as resp,
    ):
        return resp.status, await resp.read(), resp.headers


def signed(secret: str, raw: bytes, ts: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if ts is None else ts
    return {"X-Cronmesh-Signature": sign(secret.encode(), stamp, raw)}


async def runs(cluster, project: str) -> list[dict]:
    _, body = await cluster.request("GET", f"/api/v1/projects/{project}/runs")
    return body["runs"]


async def test_no_oracle_for_hook_names(cluster, tmp_path):
    """Unknown project, unknown hook, a bad name, a disabled hook and a wrong signature all
    answer byte for byte the same: a stranger learns nothing about which hooks exist."""
    await start(cluster, tmp_path)
    await setup(cluster)
    doc = {"target": {"job": "j"}, "secret": SECRET_A, "enabled": False}
    assert (await cluster.request("PUT", "/api/v1/projects/a/hooks/off", json=doc))[0] == 201
    raw = b'{"x": 1}'
    guess = signed("attacker-guess-0000000000", raw)
    answers = set()
    for path, headers in [
        ("/api/v1/hooks/a/h", guess),  # exists, wrong signature
        ("/api/v1/hooks/a/nope", guess),  # no such hook
        ("/api/v1/hooks/zz/h", guess),  # no such project
        ("/api/v1/hooks/a/BAD..name", guess),  # cannot exist
        ("/api/v1/hooks/a/off", signed(SECRET_A, raw)),  # disabled, right secret
        ("/api/v1/hooks/a/h", {"Authorization": f"Bearer {SECRET_A}"}),  # wrong mode
        ("/register/h?project=a", guess),
    ]:
        status, body, _ = await post(cluster, path, raw, headers)
        answers.add((status, body))
    assert len(answers) == 1, answers
    status, body = answers.pop()
    assert status == 401 and json.loads(body)["error"]["field"] is None
    assert await runs(cluster, "a") == []


async def test_forgery_and_replay_are_refused(cluster, tmp_path):
    await start(cluster, tmp_path)
    await setup(cluster)
    raw = json.dumps({"ref": "main"}).encode()
    captured = signed(SECRET_A, raw)
    # a captured signature on another body (the attacker edits the payload)
    status, _, _ = await post(cluster, "/api/v1/hooks/a/h", b'{"ref": "evil"}', captured)
    assert status == 401
    # a signature whose timestamp was changed to look fresh
    t, v1 = captured["X-Cronmesh-Signature"].split(",")
    moved = {"X-Cronmesh-Signature": f"t={int(t[2:]) + 1},{v1}"}
    assert (await post(cluster, "/api/v1/hooks/a/h", raw, moved))[0] == 401
    # a delivery recorded earlier and sent again after the window: refused for its age
    old = signed(SECRET_A, raw, ts=int(time.time()) - 301 - 5)
    status, body, _ = await post(cluster, "/api/v1/hooks/a/h", raw, old)
    assert status == 401 and b"X-Cronmesh-Signature.t" in body
    assert await runs(cluster, "a") == []
    # within the window, the same delivery replayed with its Idempotency-Key starts nothing new
    keyed = {**captured, "Idempotency-Key": "delivery-42"}
    first = await post(cluster, "/api/v1/hooks/a/h", raw, keyed)
    replay = await post(cluster, "/api/v1/hooks/a/h", raw, keyed)
    assert first[0] == replay[0] == 202
    assert json.loads(first[1])["run"] == json.loads(replay[1])["run"]
    assert len(await runs(cluster, "a")) == 1


async def test_a_hook_secret_opens_nothing_in_another_project(cluster, tmp_path):
    """Project a's hook secret does not sign deliveries to project b's hook of the same name,
    and a sealed hook secret copied into another project's record does not open there."""
    node = await start(cluster, tmp_path)
    await setup(cluster)
    raw = b"{}"
    status, _, _ = await post(cluster, "/api/v1/hooks/b/h", raw, signed(SECRET_A, raw))
    assert status == 401
    # an etcd writer copies a's sealed secret into b's hook record (same hook name)
    a = json.loads((await node.etcd.get(node.keys.hook("a", "h"))).value)
    b_kv = await node.etcd.get(node.keys.hook("b", "h"))
    b = json.loads(b_kv.value)
    b.update(key_id=a["key_id"], nonce=a["nonce"], ciphertext=a["ciphertext"])
    await node.etcd.put(node.keys.hook("b", "h"), json.dumps(b))
    status, _, _ = await post(cluster, "/api/v1/hooks/b/h", raw, signed(SECRET_A, raw))
    assert status == 401  # bound to project and name: it does not decrypt (refused as wrong)
    assert await runs(cluster, "b") == []


async def test_viewers_read_hooks_without_secrets_and_cannot_write_them(cluster, tmp_path):
    await start(cluster, tmp_path)
    await setup(cluster)
    tokens = {}
    for name, role in (("vera", "viewer"), ("otto", "operator"), ("edna", "editor")):
        status, body = await cluster.request(
            "POST", "/api/v1/users", json={"name": name, "roles": {"a": role}}
        )
        assert status == 201, body
        tokens[name] = (await cluster.request("POST", f"/api/v1/users/{name}/tokens", json={}))[1][
            "token"
        ]
    doc = {"target": {"job": "j"}}
    for name, want in (("vera", 403), ("otto", 403), ("edna", 201)):
        async with aiohttp.ClientSession(headers=api_headers(tokens[name])) as http:
            async with http.get(cluster.url(path="/api/v1/projects/a/hooks/h")) as r:
                got = await r.json()
                assert r.status == 200 and "secret" not in got and "ciphertext" not in got
                assert SECRET_A not in json.dumps(got)
            async with http.put(
                cluster.url(path=f"/api/v1/projects/a/hooks/by-{name}"), json=doc
            ) as r:
                assert r.status == want, await r.text()
            # another project's hooks: not even readable
            async with http.get(cluster.url(path="/api/v1/projects/b/hooks")) as r:
                assert r.status == 403


async def test_refused_deliveries_are_audited_merged(cluster, tmp_path):
    node = await start(cluster, tmp_path)
    await setup(cluster)
    raw = b"{}"
    for _ in range(50):
        status, _, _ = await post(cluster, "/api/v1/hooks/a/h", raw, signed("guess" * 5, raw))
        assert status == 401
    await node.access.flush_denials(float("inf"))
    status, body = await cluster.request("GET", "/api/v1/audit?kind=denied&limit=100")
    assert status == 200, body
    refused = [e for e in body["entries"] if e.get("outcome") == "hook_refused"]
    assert len(refused) == 1 and refused[0]["count"] == 50, refused
    assert refused[0]["path"] == "/api/v1/hooks/a/h" and refused[0]["status"] == 401
    assert "guess" not in json.dumps(refused)  # the credential is never written down


async def test_copies_racing_on_two_node_processes_start_one_run(procs, tmp_path):
    """The same keyed delivery sent 20 times at once, split across two `cronmesh node`
    processes: one run, and every answer names it (D270)."""
    import asyncio

    key = tmp_path / "secrets.key"
    key.write_text(new_key() + "\n")
    key.chmod(0o600)
    nodes = [procs.start(n, "--secrets-key-file", str(key)) for n in ("n1", "n2")]
    async with aiohttp.ClientSession(headers=api_headers()) as http:

        async def ready(url: str) -> bool:
            async with http.get(f"{url}/readyz") as r:
                return r.status == 200

        for node in nodes:
            await wait_for(lambda node=node: ready(node.url), 30, what=f"{node.node_id} ready")
        base = f"{nodes[0].url}/api/v1/projects/a"
        async with http.post(f"{base}/jobs", json={"name": "j", "command": "true"}) as r:
            assert r.status == 201, await r.text()
        hook = {"target": {"job": "j"}, "secret": SECRET_A, "burst": 100}
        async with http.put(f"{base}/hooks/h", json=hook) as r:
            assert r.status == 201, await r.text()
    raw = b'{"event": "push"}'
    headers = {
        **signed(SECRET_A, raw),
        "Content-Type": "application/json",
        "Idempotency-Key": "race-1",
    }
    async with aiohttp.ClientSession() as anon:

        async def send(i: int) -> tuple[int, dict]:
            url = f"{nodes[i % 2].url}/api/v1/hooks/a/h"
            async with anon.post(url, data=raw, headers=headers) as r:
                return r.status, await r.json()

        answers = await asyncio.gather(*(send(i) for i in range(20)))
    assert {status for status, _ in answers} == {202}, answers
    assert len({body["run"] for _, body in answers}) == 1, answers
    assert sum(not body["replayed"] for _, body in answers) == 1
    async with aiohttp.ClientSession(headers=api_headers()) as http:
        async with http.get(f"{nodes[1].url}/api/v1/projects/a/runs?job=j") as r:
            assert len((await r.json())["runs"]) == 1


async def test_key_rotation_reseals_hook_secrets(cluster, tmp_path):
    """`secret rotate` re-seals hook secrets too: after the old key leaves the ring, a signed
    delivery still authenticates (else every hook would answer 503 or 401)."""
    from cluster.secretbox import KeyRing

    old, new = new_key(), new_key()
    path = tmp_path / "secrets.key"

    def ring(*keys: str) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in keys))
        tmp.chmod(0o600)
        tmp.replace(path)

    ring(old)
    node = await cluster.start(secrets_key_file=str(path))
    await setup(cluster)
    new_id = KeyRing.parse(new).current
    ring(new, old)
    status, body = await cluster.request("POST", "/api/v1/secrets/rotate?dry_run=1")
    assert status == 200 and body["hooks"]["rotated"] == 0, body
    status, body = await cluster.request("POST", "/api/v1/secrets/rotate")
    assert status == 200 and body["hooks"] == {
        "rotated": 2,
        "values_by_key": {new_id: 2},
        "failed": [],
    }, body
    kv = await node.etcd.get(node.keys.hook("a", "h"))
    assert json.loads(kv.value)["key_id"] == new_id
    ring(new)  # the old key is gone
    raw = b"{}"
    status, body, _ = await post(cluster, "/api/v1/hooks/a/h", raw, signed(SECRET_A, raw))
    assert status == 202, body
