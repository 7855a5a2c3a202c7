"""Jobs run as a user, in a private folder; the node's data folder is closed to them (issue 18,
items 3; D142, D143).

Attacks reproduced: a job reads every project's spool and results in its node's data folder; an
editor writes a job that runs as root on a node running as root; an editor names a user the
project was not given. A real ``cronmesh node`` process runs as root here (as in CI) with its
secure defaults (jobs as ``nobody``, no root jobs) and one user the test creates with ``useradd``.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import api_session, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

A = "/api/v1/projects/a"
FINISHED = ("succeeded", "failed", "timed_out", "cancelled", "lost")
SECURE = {"CRONMESH_ALLOW_ROOT_JOBS": "false", "CRONMESH_RUN_AS_DEFAULT": "nobody"}


@pytest.fixture
def data_dir():
    """A data folder other users can reach the work folder in (pytest's own temporary folders
    are 0700 all the way down, which no job of another user could traverse)."""
    base = Path(tempfile.mkdtemp(prefix="cm-runas-", dir="/var/tmp"))
    base.chmod(0o755)
    yield base / "data"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def job_user():
    """A throwaway user with its own primary group, and a second group it belongs to."""
    name = f"cmt{uuid.uuid4().hex[:8]}"
    extra = f"{name}x"
    subprocess.run(["groupadd", extra], check=True, capture_output=True)
    subprocess.run(
        ["useradd", "--user-group", "--no-create-home", "-G", extra, "-s", "/bin/sh", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name), grp.getgrnam(extra)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", extra], capture_output=True)


async def ready(http, url: str) -> bool:
    async with http.get(f"{url}/readyz") as r:
        return r.status == 200


async def call(http, method: str, url: str, body=None) -> tuple[int, dict]:
    async with http.request(method, url, json=body) as r:
        return r.status, await r.json() if r.content_type == "application/json" else {}


async def run_job(http, url: str, name: str, job: dict) -> dict:
    status, body = await call(http, "PUT", f"{url}{A}/jobs/{name}", job)
    assert status in (200, 201), body
    status, run = await call(http, "POST", f"{url}{A}/jobs/{name}/runs", {})
    assert status == 201, run

    async def finished():
        _, doc = await call(http, "GET", f"{url}{A}/runs/{run['id']}")
        return doc if doc.get("status") in FINISHED else None

    return await wait_for(finished, 30, what=f"run of {name}")


async def output(http, url: str, run_id: str) -> list[str]:
    async with http.get(f"{url}{A}/runs/{run_id}/logs") as r:
        assert r.status == 200
        return [line.split(" ", 2)[-1] for line in (await r.text()).splitlines()]


async def test_jobs_run_as_their_user_in_a_private_folder_and_cannot_read_the_node(
    procs, job_user, data_dir
):
    user, extra = job_user
    data = data_dir
    node = procs.start(
        "n1", "--data-dir", str(data), env={**SECURE, "CRONMESH_RUN_AS_USERS": user.pw_name}
    )
    async with api_session() as http:
        await wait_for(lambda: ready(http, node.url), 30, what="node ready")
        status, body = await call(
            http, "PUT", f"{node.url}{A}", {"description": "a", "run_as_users": [user.pw_name]}
        )
        assert status == 201 and body["run_as_users"] == [user.pw_name], body

        probe = (
            'id -u; id -g; id -G; pwd; stat -c "%a %u" .; '
            f"ls {data} 2>&1; cat {data}/n1/spool/* 2>&1 | head -c 200; "
            'echo \'{"rows": 7}\' > "$CRONMESH_RESULT_FILE"; touch ./scratch; echo "home=$HOME"'
        )
        run = await run_job(
            http,
            node.url,
            "as-user",
            {"command": probe, "run_as": {"user": user.pw_name, "group": extra.gr_name}},
        )
        assert run["status"] == "succeeded", run
        lines = await output(http, node.url, run["id"])
        assert run["result"] == {"rows": 7}, (run, lines)  # the job's user writes its result
        uid, gid, groups, cwd, folder = lines[:5]
        assert uid == str(user.pw_uid) and gid == str(extra.gr_gid), lines
        assert str(user.pw_gid) in groups.split(), lines  # its own groups, not root's
        assert "0" not in groups.split(), lines
        assert cwd.startswith(str(data / "n1" / "work" / "run-")), lines
        assert folder == f"700 {user.pw_uid}", lines
        assert "Permission denied" in lines[5], lines  # cannot list the data folder
        assert all("Permission denied" in line for line in lines[6:-1] if line), lines
        assert lines[-1] == f"home={user.pw_dir}", lines
        work = data / "n1" / "work"
        assert not [p for p in work.iterdir() if p.name.startswith("run-")]  # removed after

        # a workflow task runs as its run_as user too; a user the project lacks is refused
        task = {"name": "t", "command": "id -u", "run_as": {"user": user.pw_name}}
        status, body = await call(
            http,
            "PUT",
            f"{node.url}{A}/workflows/bad",
            {"tasks": [{"name": "x", "command": "id", "run_as": {"user": "daemon"}}]},
        )
        assert status == 403 and body["error"]["field"] == "tasks.0.run_as.user", body
        status, body = await call(http, "PUT", f"{node.url}{A}/workflows/wf", {"tasks": [task]})
        assert status == 201, body
        status, ex = await call(http, "POST", f"{node.url}{A}/workflows/wf/executions", {})
        assert status == 201, ex

        async def executed():
            _, doc = await call(http, "GET", f"{node.url}{A}/executions/{ex['id']}")
            return doc if doc.get("status") in ("succeeded", "failed", "cancelled") else None

        doc = await wait_for(executed, 30, what="the workflow execution")
        assert doc["status"] == "succeeded", doc
        lines = await output(http, node.url, doc["tasks"]["t"]["run_id"])
        assert lines[0] == str(user.pw_uid), lines

        # the job's user controls its folder: a result file that links to a file only root
        # may read is not followed by the node (which runs as root)
        run = await run_job(
            http,
            node.url,
            "link",
            {
                "command": 'ln -s /etc/shadow "$CRONMESH_RESULT_FILE"',
                "run_as": {"user": user.pw_name},
            },
        )
        assert run["result"] is None and "symbolic link" in (run["error"] or ""), run

        # no run_as: the node's default user, nobody, never root
        run = await run_job(http, node.url, "default-user", {"command": "id -u"})
        assert (await output(http, node.url, run["id"]))[0] == str(pwd.getpwnam("nobody").pw_uid)

        # a user the project was not given, and root: refused, nothing stored
        for job_name, who in (("as-root", "root"), ("as-other", "daemon")):
            status, body = await call(
                http,
                "PUT",
                f"{node.url}{A}/jobs/{job_name}",
                {"command": "id", "run_as": {"user": who}},
            )
            assert status == 403 and body["error"]["field"] == "run_as.user", body
            status, _ = await call(http, "GET", f"{node.url}{A}/jobs/{job_name}")
            assert status == 404
        # a PATCH cannot slip one in either
        status, body = await call(
            http, "PATCH", f"{node.url}{A}/jobs/as-user", {"run_as": {"user": "daemon"}}
        )
        assert status == 403 and body["error"]["field"] == "run_as.user", body
        _, stored = await call(http, "GET", f"{node.url}{A}/jobs/as-user")
        assert stored["run_as"]["user"] == user.pw_name, stored
        # a user the project lists but that exists nowhere: 400 naming the field
        await call(http, "PUT", f"{node.url}{A}", {"run_as_users": [user.pw_name, "ghost-user"]})
        status, body = await call(
            http,
            "PUT",
            f"{node.url}{A}/jobs/ghost",
            {"command": "id", "run_as": {"user": "ghost-user"}},
        )
        assert status == 400 and body["error"]["field"] == "run_as.user", body
        # a group the user is not in
        status, body = await call(
            http,
            "PUT",
            f"{node.url}{A}/jobs/wheel",
            {"command": "id", "run_as": {"user": user.pw_name, "group": "root"}},
        )
        assert status == 400 and body["error"]["field"] == "run_as.group", body

        # the project may use root, the node may not: the run waits and says why
        await call(http, "PUT", f"{node.url}{A}", {"run_as_users": [user.pw_name, "root"]})
        status, body = await call(
            http,
            "PUT",
            f"{node.url}{A}/jobs/as-root",
            {"command": "id", "run_as": {"user": "root"}},
        )
        assert status == 201, body
        status, run = await call(http, "POST", f"{node.url}{A}/jobs/as-root/runs", {})
        await asyncio.sleep(1.0)  # a claim would take milliseconds
        _, doc = await call(http, "GET", f"{node.url}{A}/runs/{run['id']}")
        assert doc["status"] == "pending", doc
        assert "n1 may not run jobs as 'root'" in doc["placement"]["reason"], doc

        # the admin takes the user away from the project: the next run waits instead of running
        await call(http, "PUT", f"{node.url}{A}", {"run_as_users": []})
        status, run = await call(http, "POST", f"{node.url}{A}/jobs/as-user/runs", {})
        assert status == 201, run
        await asyncio.sleep(1.0)
        _, doc = await call(http, "GET", f"{node.url}{A}/runs/{run['id']}")
        assert doc["status"] == "pending", doc
        assert "project 'a' may not run jobs as" in doc["placement"]["reason"], doc


async def test_the_data_folder_is_private_and_its_files_0600(procs, tmp_path):
    node = procs.start("n1", env=SECURE)
    data = tmp_path / "data"
    async with api_session() as http:
        await wait_for(lambda: ready(http, node.url), 30, what="node ready")
        run = await run_job(http, node.url, "hello", {"command": "echo hello"})
        assert run["status"] == "succeeded", run
        await wait_for(
            lambda: any(p.is_file() for p in (data / "n1" / "logs").rglob("*")),
            20,
            what="the run's log in the local store",
        )
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [data, *data.rglob("*")]}
    folders = {p.relative_to(tmp_path).as_posix(): m for p, m in modes.items() if p.is_dir()}
    files = {p.relative_to(tmp_path).as_posix(): m for p, m in modes.items() if p.is_file()}
    # traverse-only on the way to the work folder, private everywhere else
    traverse = {"data", "data/n1", "data/n1/work"}
    assert {f: m for f, m in folders.items() if f in traverse} == dict.fromkeys(traverse, 0o711)
    assert {f: m for f, m in folders.items() if f not in traverse and m != 0o700} == {}, folders
    assert files and {f: m for f, m in files.items() if m != 0o600} == {}, files
    assert "data/n1/spool" in folders and "data/n1/logs" in folders, folders


async def test_a_scheduled_run_spawned_ahead_switches_user_before_its_tick(procs):
    """Runs due at a tick are spawned ahead, armed (D121): the user switch happens then, and the
    release at the tick still runs the command as that user."""
    node = procs.start("n1", env=SECURE)
    nobody = str(pwd.getpwnam("nobody").pw_uid)
    async with api_session() as http:
        await wait_for(lambda: ready(http, node.url), 30, what="node ready")
        job = {"command": "id -u", "schedules": [{"cron": "* * * * * *"}]}
        status, body = await call(http, "PUT", f"{node.url}{A}/jobs/tick", job)
        assert status == 201, body

        async def scheduled_run():
            _, doc = await call(http, "GET", f"{node.url}{A}/runs?job=tick&status=succeeded")
            runs = [r for r in doc.get("runs", []) if r["source"] == "schedule"]
            return runs[0] if runs else None

        run = await wait_for(scheduled_run, 30, what="a scheduled run")
        await call(http, "PATCH", f"{node.url}{A}/jobs/tick", {"enabled": False})
        started, due = (datetime.fromisoformat(run[k]) for k in ("started_at", "scheduled_at"))
        assert started >= due, run  # released at its tick, not before
        assert (await output(http, node.url, run["id"]))[0] == nobody
