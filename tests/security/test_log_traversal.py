"""#19 item 1: a viewer of project ``a`` read project ``b``'s live log through an encoded path
traversal in the run id (``..%2F..%2Fb%2Fbjob%2F<id>``) or in the peers' ``job`` query parameter.

Each attack is sent exactly as the review sent it, against a real node with a real etcd, while
b's run is live and has printed its secret; the answer must be a 400 naming the part and must not
hold b's output. The stores' own refusals (defence in depth) are tested below with plain values.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from logstore.local import LocalFolderStore
from logstore.s3 import S3Store
from logstore.s3put import SignedPut
from logstore.spool import LogRef, Spool, UnsafeLogRef
from logstore.store import KeyOutsideStore, check_key
from nodes import signing
from tests.conftest import api_headers, wait_for

SECRET = "b-secret-output-7f3a"


async def _user(cluster, name: str, roles: dict[str, str]) -> str:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": name, "roles": roles}
    )
    assert status == 201, body
    status, body = await cluster.request("POST", f"/api/v1/users/{name}/tokens", json={})
    assert status == 201, body
    return body["token"]


async def _get(url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        # encoded=True: the %2F go on the wire as the attacker wrote them
        async with http.get(URL(url, encoded=True), headers=headers) as resp:
            return resp.status, await resp.text()


@pytest.fixture
async def live_b(cluster):
    """A node, project a with a job, project b with a live run that printed SECRET."""
    node = await cluster.start()
    for project, job, command in (
        ("a", "ajob", "echo a"),
        ("b", "bjob", f"echo {SECRET}; sleep 60"),
    ):
        status, body = await cluster.request(
            "PUT", f"/api/v1/projects/{project}/jobs/{job}", json={"name": job, "command": command}
        )
        assert status == 201, body
    # ajob has run here once: its spool folder exists, so a path through it resolves
    status, a_run = await cluster.request("POST", "/api/v1/projects/a/jobs/ajob/runs", json={})
    assert status == 201, a_run

    async def a_done() -> bool:
        s, r = await cluster.request("GET", f"/api/v1/projects/a/runs/{a_run['id']}")
        return s == 200 and r["status"] == "succeeded"

    await wait_for(a_done, 20, what="a's run")
    status, run = await cluster.request("POST", "/api/v1/projects/b/jobs/bjob/runs", json={})
    assert status == 201, run

    async def printed() -> bool:
        s, text = await cluster.request("GET", f"/api/v1/projects/b/runs/{run['id']}/logs")
        return s == 200 and SECRET in text

    await wait_for(printed, 20, what="b's run printing its secret")
    yield node, run["id"]
    await cluster.request("POST", f"/api/v1/projects/b/runs/{run['id']}/abort")


async def test_viewer_of_a_cannot_read_b_live_log_by_run_id_traversal(cluster, live_b):
    node, run_id = live_b
    viewer = await _user(cluster, "va", {"a": "viewer"})
    for run_part in (
        f"..%2F..%2Fb%2Fbjob%2F{run_id}",  # the review's request
        f"..%2Fb%2Fbjob%2F{run_id}",
        f"%2E%2E%2F%2E%2E%2Fb%2Fbjob%2F{run_id}",
        f"{run_id}%00",
    ):
        url = cluster.url(node, f"/api/v1/projects/a/runs/{run_part}/logs?job=ajob")
        status, text = await _get(url, api_headers(viewer))
        assert SECRET not in text, (run_part, text)
        assert status == 400, (run_part, status, text)
        assert '"field": "run"' in text, text
    # the job query parameter is checked as well (it names a folder and an object key)
    url = cluster.url(node, f"/api/v1/projects/a/runs/{run_id}/logs?job=..%2F..%2Fb%2Fbjob")
    status, text = await _get(url, api_headers(viewer))
    assert status == 400 and '"field": "job"' in text and SECRET not in text, text


async def test_peer_log_route_refuses_a_job_that_climbs_out(cluster, live_b):
    """``/internal/v1`` takes ``job`` from the query: a signed request (a compromised or confused
    peer) with ``job=../b/bjob`` gets a 400, not b's spool."""
    node, run_id = live_b
    await wait_for(lambda: node.access.peer_secret is not None, 10, what="peer secret")
    for qs in (
        "job=..%2Fb%2Fbjob&attempt=1",
        "job=..%2F..%2Fb%2Fbjob&attempt=1",
        "job=..&attempt=1",
    ):
        path = f"/internal/v1/projects/a/runs/{run_id}/logs?{qs}"
        headers = signing.sign(
            node.access.peer_secret, "GET", path, b"", time.time(), "n9", to=node.node_id
        )
        status, text = await _get(cluster.url(node, path), headers)
        assert SECRET not in text, (qs, text)
        assert status == 400 and '"field": "job"' in text, (qs, status, text)
    path = f"/internal/v1/projects/a/runs/..%2F..%2Fb%2Fbjob%2F{run_id}/logs?attempt=1"
    headers = signing.sign(
        node.access.peer_secret, "GET", path, b"", time.time(), "n9", to=node.node_id
    )
    status, text = await _get(cluster.url(node, path), headers)
    assert status == 400 and '"field": "run"' in text and SECRET not in text, text


# -- defence in depth: the spool and the stores refuse on their own -----------------------------

BAD_REFS = [
    ("a", "ajob", f"../../b/bjob/{'1' * 19}", 1),
    ("a", "../b/bjob", "1", 1),
    ("..", "bjob", "1", 1),
    ("a/../b", "bjob", "1", 1),
    ("a", "ajob", "1/../2", 1),
    ("a", "ajob", "1", 0),
    ("a", "ajob", "", 1),
    ("a", "ajob", "\uff11\uff12", 1),  # full-width digits: str.isdigit() says yes
    ("A", "ajob", "1", 1),
    ("a", "@w:../t", "1", 1),
]


@pytest.mark.parametrize("ref", BAD_REFS)
def test_log_ref_refuses_unsafe_parts(ref):
    with pytest.raises(UnsafeLogRef):
        LogRef(*ref)


def test_log_ref_takes_real_names():
    LogRef("a", "ajob", "0123456789012345678", 3)
    LogRef("my.proj", "@flow:task-1", "1", 1)


def test_spool_path_refuses_a_ref_that_skipped_its_checks(tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    forged = object.__new__(LogRef)
    for name, value in (
        ("project", "a"),
        ("job", "ajob"),
        ("run", "../../b/bjob/1"),
        ("attempt", 1),
    ):
        object.__setattr__(forged, name, value)
    with pytest.raises(UnsafeLogRef):
        spool.path(forged)
    with pytest.raises(UnsafeLogRef):
        spool.find("a", "../b", 1)
    with pytest.raises(UnsafeLogRef):
        spool.find("a", "*", 1)
    assert spool.path(LogRef("a", "ajob", "1", 1)) == tmp_path / "spool/a/ajob/1.1.spool"


BAD_KEYS = [
    "../b/bjob/1/1.log",
    "a/../../b/1.log",
    "/etc/passwd",
    "a//b",
    "a/./b",
    "",
    "..",
    "a\\..\\b",
    "a\x00b",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_check_key_refuses_keys_that_leave_the_store(key):
    with pytest.raises(KeyOutsideStore):
        check_key(key)


async def test_local_store_refuses_keys_outside_its_root(tmp_path: Path):
    store = LocalFolderStore(tmp_path / "store")
    (tmp_path / "outside.log").write_text("outside")
    for key in ("../outside.log", "a/../../outside.log"):
        with pytest.raises(KeyOutsideStore):
            await store.read(key)
        with pytest.raises(KeyOutsideStore):
            await store.put_bytes(key, b"x")
    with pytest.raises(KeyOutsideStore):
        await store.keys("../")
    assert (tmp_path / "outside.log").read_text() == "outside"
    await store.put_bytes("a/j/1/1.log", b"fine")
    assert await store.read("a/j/1/1.log") == b"fine"
    assert await store.keys("a/") == ["a/j/1/1.log"]


def test_s3_store_and_signed_put_refuse_keys_outside_the_prefix():
    store = S3Store("s3://bucket/logs", endpoint="http://127.0.0.1:9")
    for key in ("../other/a/j/1/1.log", "a/../../other", "/abs"):
        with pytest.raises(KeyOutsideStore):
            store._key(key)
    assert store._key("a/j/1/1.log") == "logs/a/j/1/1.log"
    assert store._key("a/", prefix=True) == "logs/a/"

    class Creds:
        def get_frozen_credentials(self):  # never reached: the key is refused first
            raise AssertionError("signed a request for a key outside the bucket prefix")

    put = SignedPut("http://127.0.0.1:9", "bucket", "us-east-1", Creds())
    with pytest.raises(KeyOutsideStore):
        put.put("logs/../other/1.log", b"x", "text/plain")
