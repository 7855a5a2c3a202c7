"""Issue 19 item 9: any user could wipe the audit history. Every refused request wrote an entry and
only the newest 100 000 were kept, so a script of refusals pushed every real change out. Now
repeated refusals merge into one entry with a count, refusals and failed logins have a budget of
their own, and the log can be exported to the log store as append-only objects (D168)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import aiohttp

from cluster.audit import DenialMerger, Retention
from tests.conftest import api_headers, run_cli

JOB = {"name": "j", "command": "true"}


# -- pure: the merger ----------------------------------------------------------------------------


def test_repeats_merge_and_one_source_cannot_open_unbounded_bursts():
    m = DenialMerger(window=60, per_source=3, max_open=100)
    doc = {"actor": "eve", "path": "/x"}
    first = m.admit(("denied", "eve", "POST", "/x"), "actor:eve", doc, 0.0)
    assert first is not None
    first.entry_id = "1"
    for i in range(999):
        assert m.admit(("denied", "eve", "POST", "/x"), "actor:eve", doc, float(i % 59)) is None
    # three distinct paths per window at most; the rest fold into one overflow burst
    opened = [
        m.admit(("denied", "eve", "POST", f"/y{i}"), "actor:eve", doc, 1.0) for i in range(50)
    ]
    assert sum(b is not None for b in opened) == 3  # 2 more paths + 1 overflow
    overflow = m.open[("overflow", "actor:eve")]
    assert overflow.count == 48 and overflow.doc["overflow"] is True
    # another user is not affected by eve's bursts
    assert m.admit(("denied", "bob", "POST", "/x"), "actor:bob", doc, 1.0) is not None
    assert m.due(30.0) == []
    ended = m.due(60.0)
    assert [b.count for b in ended] == [1000]  # only bursts that grew (and were written) return
    assert ("denied", "eve", "POST", "/x") not in m.open and m.by_source["actor:eve"] == 3
    m.due(61.0)
    assert m.open == {} and m.by_source == {}


# -- against a node ------------------------------------------------------------------------------


async def make_user(cluster, name: str, roles: dict[str, str]) -> str:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": name, "roles": roles}
    )
    assert status == 201, body
    return (await cluster.request("POST", f"/api/v1/users/{name}/tokens", json={}))[1]["token"]


async def count(cluster, etcd, prefix: str) -> int:
    return (await etcd.range(f"{cluster.prefix}/{prefix}/", count_only=True)).count


async def test_a_flood_of_refusals_is_one_entry_with_a_count(cluster, etcd):
    node = await cluster.start()
    eve = await make_user(cluster, "eve", {"a": "viewer"})
    before = await count(cluster, etcd, "audit")
    async with aiohttp.ClientSession(headers=api_headers(eve)) as http:
        url = cluster.url(None, "/api/v1/projects/a/jobs")
        for _ in range(300):
            async with http.post(url, json=JOB) as r:
                assert r.status == 403
    # the history of changes got nothing; the refusals got one entry
    assert await count(cluster, etcd, "audit") == before
    assert await count(cluster, etcd, "audit-denied") == 1
    await node.access.flush_denials(float("inf"))  # the window ends
    status, body = await cluster.request("GET", "/api/v1/audit?actor=eve&kind=denied")
    assert status == 200 and len(body["entries"]) == 1, body
    entry = body["entries"][0]
    assert entry["outcome"] == "denied" and entry["count"] == 300, entry
    # the merged list (the default) shows it too
    status, body = await cluster.request("GET", "/api/v1/audit?actor=eve")
    assert [e["id"] for e in body["entries"]] == [entry["id"]]


async def test_refusals_and_failed_logins_cannot_push_changes_out(cluster, etcd):
    node = await cluster.start()
    audit = node.access.audit
    audit.retention["denied"] = Retention(max_entries=5, max_age=timedelta(days=1), every=1)
    status, _ = await cluster.request(
        "PUT", "/api/v1/projects/a/jobs/kept", json=JOB | {"name": "kept"}
    )
    assert status == 201
    changes = await count(cluster, etcd, "audit")
    # many different refused users and guessed user names: more than the denials' budget
    async with aiohttp.ClientSession() as anon:
        for i in range(12):
            login = {"username": f"guess{i}", "password": "wrong password"}
            async with anon.post(cluster.url(None, "/api/v1/auth/login"), json=login) as r:
                assert r.status == 401
    for i in range(4):
        token = await make_user(cluster, f"nobody{i}", {})
        async with aiohttp.ClientSession(headers=api_headers(token)) as http:
            async with http.delete(cluster.url(None, "/api/v1/projects/a/jobs/kept")) as r:
                assert r.status == 403
    assert await count(cluster, etcd, "audit-denied") <= 5
    assert await count(cluster, etcd, "audit") >= changes  # user creations added, nothing lost
    status, body = await cluster.request("GET", "/api/v1/audit?kind=changes&limit=1000")
    assert any(e.get("path") == "/api/v1/projects/a/jobs/kept" for e in body["entries"])


async def test_export_writes_append_only_objects_since_the_last_export(cluster, tmp_path):
    node = await cluster.start(log_dir=str(tmp_path / "store"))
    node.access.audit.settle = timedelta(0)  # export entries at once (default: 2 minutes old)
    await cluster.request("PUT", "/api/v1/projects/a/jobs/one", json=JOB | {"name": "one"})
    status, first = await cluster.request("POST", "/api/v1/audit/export")
    assert status == 200 and first["exported"] >= 1 and len(first["objects"]) == 1, first
    obj = tmp_path / "store" / first["objects"][0]
    lines = [json.loads(x) for x in read(obj).splitlines()]
    assert any(e.get("path") == "/api/v1/projects/a/jobs/one" for e in lines)
    assert first["cursor"] == lines[-1]["id"]
    # only what is new: the first export's own entry (an export is an audited change)
    status, again = await cluster.request("POST", "/api/v1/audit/export")
    assert again["exported"] == 1, again
    entry = json.loads(read(tmp_path / "store" / again["objects"][0]))
    assert entry["path"] == "/api/v1/audit/export" and entry["id"] > first["cursor"]
    # a new change goes to a new object; the old one is left as it was
    old_text = read(obj)
    await cluster.request("PUT", "/api/v1/projects/a/jobs/two", json=JOB | {"name": "two"})
    code, out, err = await asyncio.to_thread(run_cli, cluster.url(), "audit", "export")
    assert code == 0 and "exported" in out, (out, err)
    assert read(obj) == old_text
    objects = sorted(p.name for p in (tmp_path / "store" / "_audit").iterdir())
    assert len(objects) == 3 and objects[0] == obj.name
    # only cluster admins export
    token = await make_user(cluster, "vic", {"*": "viewer"})
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:
        async with http.post(cluster.url(None, "/api/v1/audit/export")) as r:
            assert r.status == 403


def read(path: Path) -> str:
    return path.read_text()
