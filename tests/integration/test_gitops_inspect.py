"""`cronmesh apply/diff/export` against a live node, and `cronmesh inspect` against etcd."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from nodes.devtools.embedded import etcd_binary
from tests.api_helpers import JOBS, run_done
from tests.conftest import run_cli, wait_for


async def cli(url: str, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(run_cli, url, *args)


@pytest.mark.timeout(300)  # a dozen CLI processes: ~1 s of CPU each, 5-10 s at load 15-25
async def test_apply_diff_prune_export_roundtrip(cluster, tmp_path: Path):
    await cluster.start()
    url = cluster.url()
    repo = tmp_path / "repo"
    (repo / "team").mkdir(parents=True)
    (repo / "a.yaml").write_text("name: a\ncommand: echo a\nschedules:\n  - cron: '0 3 * * *'\n")
    (repo / "team" / "b.yml").write_text(
        "kind: Job\nname: b\ncommand: echo b\n---\nkind: Job\nproject: ops\nname: c\ncommand: 'true'\n"
    )
    code, out, err = await cli(url, "diff", "-f", str(repo))
    assert code == 1, err
    assert "+ job default/a (create)" in out and "+ job ops/c (create)" in out

    code, out, err = await cli(url, "apply", "-f", str(repo))
    assert code == 0, err
    status, body = await cluster.request("GET", f"{JOBS}/a")
    assert status == 200 and body["schedules"][0]["cron"] == "0 3 * * *"
    status, _ = await cluster.request("GET", "/api/v1/projects/ops/jobs/c")
    assert status == 200

    code, out, _ = await cli(url, "diff", "-f", str(repo))
    assert (code, out.strip()) == (0, "no changes")

    # change one, remove one from the folder, and a job made by hand is pruned only with --prune
    (repo / "a.yaml").write_text("name: a\ncommand: echo a\nretries: 2\n")
    (repo / "team" / "b.yml").write_text("kind: Job\nproject: ops\nname: c\ncommand: 'true'\n")
    await cluster.request("POST", JOBS, json={"name": "handmade", "command": "true"})
    code, out, _ = await cli(url, "diff", "-f", str(repo))
    assert code == 1 and "~ job default/a (update)" in out and "    +retries: 2" in out
    assert "(delete)" not in out and "kept (--prune would delete them)" in out  # D250
    code, out, _ = await cli(url, "diff", "-f", str(repo), "--prune")
    assert "- job default/b (delete)" in out and "- job default/handmade (delete)" in out
    code, out, _ = await cli(url, "apply", "-f", str(repo), "--prune", "--dry-run")
    assert code == 0 and "[dry run]" in out
    status, _ = await cluster.request("GET", f"{JOBS}/handmade")
    assert status == 200
    code, out, err = await cli(url, "apply", "-f", str(repo), "--prune", "--yes")
    assert code == 0, err
    _, body = await cluster.request("GET", JOBS)
    assert sorted(j["name"] for j in body["jobs"]) == ["a"]
    _, body = await cluster.request("GET", "/api/v1/projects/ops/jobs")
    assert [j["name"] for j in body["jobs"]] == ["c"]

    export = tmp_path / "export"
    code, out, err = await cli(url, "export", str(export), "--all-projects")
    assert code == 0, err
    files = sorted(str(p.relative_to(export)) for p in export.rglob("*.yaml"))
    assert files == ["default/jobs/a.yaml", "ops/jobs/c.yaml"]
    doc = yaml.safe_load((export / "default/jobs/a.yaml").read_text())
    assert doc == {
        "kind": "Job",
        "project": "default",
        "name": "a",
        "command": "echo a",
        "retries": 2,
    }
    code, out, _ = await cli(url, "diff", "-f", str(export), "--prune")
    assert (code, out.strip()) == (0, "no changes")


async def test_apply_rejects_a_bad_folder_without_writing_anything(cluster, tmp_path: Path):
    await cluster.start()
    (tmp_path / "ok.yaml").write_text("name: ok\ncommand: 'true'\n")
    (tmp_path / "bad.yaml").write_text("name: bad\ncommand: 'true'\ntimeout: -1\n")
    code, _, err = await cli(cluster.url(), "apply", "-f", str(tmp_path))
    assert code == 2 and "bad" in err and "timeout" in err
    _, body = await cluster.request("GET", JOBS)
    assert body["jobs"] == []


async def test_inspect_decodes_nodes_leader_queue_claims_and_a_job(cluster, etcd_server, prefix):
    node = await cluster.start("insp-1")
    await wait_for(lambda: node.leading, 15, what="leader")
    job = {"name": "sleepy", "command": "sleep 30", "max_parallel": 1}
    await cluster.request("POST", JOBS, json=job)
    _, running = await cluster.request("POST", f"{JOBS}/sleepy/runs", json={})
    _, queued = await cluster.request("POST", f"{JOBS}/sleepy/runs", json={})

    async def is_running():
        _, r = await cluster.request("GET", f"/api/v1/projects/default/runs/{running['id']}")
        return r["status"] == "running"

    await wait_for(is_running, 20, what="first run running")
    base = ("--etcd", etcd_server.endpoint, "--prefix", prefix)
    url = cluster.url()
    code, out, err = await cli(url, "-o", "json", "inspect", *base)
    assert code == 0, err
    data = json.loads(out)
    assert data["election"]["leader"] == "insp-1"
    assert [n["id"] for n in data["nodes"] if n["up"]] == ["insp-1"]
    assert data["queue"]["depth"] == 1 and data["queue"]["entries"][0]["run"] == queued["id"]
    assert [(c["run"], c["node"]) for c in data["claims"]] == [(running["id"], "insp-1")]

    # the etcdctl recipes of docs/etcd-layout.md answer the same
    ctl = [etcd_binary("etcdctl"), "--endpoints", etcd_server.endpoint]
    count = await asyncio.to_thread(
        subprocess.run,
        [*ctl, "get", "--prefix", f"{prefix}/queue/", "--count-only", "-w", "fields"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"Count" : 1' in count.stdout
    claims = await asyncio.to_thread(
        subprocess.run,
        [*ctl, "get", "--prefix", f"{prefix}/claims/", "-w", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    kvs = json.loads(claims.stdout)["kvs"]
    assert [base64.b64decode(kv["key"]).decode().rsplit("/", 1)[-1] for kv in kvs] == [
        running["id"]
    ]
    assert format(kvs[0]["lease"], "x") == data["claims"][0]["lease"]
    assert kvs[0]["create_revision"] == data["claims"][0]["claim_revision"]

    code, out, _ = await cli(url, "-o", "json", "inspect", "job", "sleepy", *base)
    assert code == 0
    info = json.loads(out)
    assert info["job"]["command"] == "sleep 30"
    assert sorted(info["active_runs"]) == sorted([running["id"], queued["id"]])

    code, out, _ = await cli(url, "inspect", *base)
    assert code == 0 and "leader: insp-1" in out and "insp-1" in out and running["id"] in out
    code, out, _ = await cli(url, "inspect", "leader", *base)
    assert code == 0 and out.startswith("leader: insp-1")
    code, _, err = await cli(url, "inspect", "job", "nope", *base)
    assert code == 1 and "no job default/nope" in err

    for run in (running, queued):
        await cluster.request("POST", f"/api/v1/projects/default/runs/{run['id']}/abort")
    await run_done(cluster, queued["id"], ("cancelled",))


async def test_cli_project_notification_defaults(cluster, tmp_path: Path):
    await cluster.start()
    url = cluster.url()
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - on: [failure]\n    email: {to: [ops@example.com]}\n")
    code, out, err = await cli(url, "notifications", "set", "-f", str(rules))
    assert code == 0, err
    code, out, _ = await cli(url, "notifications", "get")
    assert yaml.safe_load(out)["rules"][0]["email"]["to"] == ["ops@example.com"]
    rules.write_text("rules:\n  - on: [never]\n    email: {to: [ops@example.com]}\n")
    code, _, err = await cli(url, "notifications", "set", "-f", str(rules))
    assert code == 1 and "rules.0.on.0" in err
    code, _, _ = await cli(url, "notifications", "clear")
    assert code == 0
    _, body = await cluster.request("GET", "/api/v1/projects/default/notifications")
    assert body == {"rules": []}
