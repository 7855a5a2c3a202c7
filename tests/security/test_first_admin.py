"""Issue 19 item 20: the generated first-admin password was written to the node's log in plain
text (log shippers, `kubectl logs`, support bundles), and nothing forced it to be replaced. It now
goes to a 0600 file, and the account can do nothing but change it (D169)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import aiohttp
from structlog.testing import capture_logs

from tests.conftest import ROOT, api_headers, cli_env

LOGIN = "/api/v1/auth/login"


def read_private(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return path.read_text().strip(), stat.S_IMODE(st.st_mode), st.st_uid


async def login(cluster, user: str, password: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as anon:
        url = cluster.url(None, LOGIN)
        async with anon.post(url, json={"username": user, "password": password}) as r:
            return r.status, await r.json()


async def call(cluster, method: str, path: str, token: str, **kw) -> tuple[int, dict]:
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:
        async with http.request(method, cluster.url(None, path), **kw) as r:
            return r.status, (await r.json() if r.content_type == "application/json" else {})


async def test_generated_password_goes_to_a_private_file_not_the_log(cluster, tmp_path):
    with capture_logs() as logs:
        await cluster.start("a1", admin_token=None)
        await cluster.start("a2", admin_token=None)
    told = [e for e in logs if e.get("password_file")]
    assert len(told) == 1, told  # the node that won the bootstrap transaction
    path = Path(told[0]["password_file"])
    password, mode, uid = read_private(path)
    assert len(password) >= 20
    assert mode == 0o600 and uid == os.getuid()
    # the attack: the password in the log. No event carries it, in any field
    dumped = json.dumps(logs, default=str)
    assert password not in dumped
    # the node that lost the transaction left no file behind
    files = list((tmp_path / "data").glob("*/initial-admin-password"))
    assert files == [path], files


async def test_the_generated_password_must_be_changed_before_anything_else(cluster):
    with capture_logs() as logs:
        await cluster.start(admin_token=None)
    password, _, _ = read_private(
        Path(next(e for e in logs if e.get("password_file"))["password_file"])
    )
    status, body = await login(cluster, "admin", password)
    assert status == 200 and body["user"]["must_change_password"] is True
    token = body["token"]
    for method, path_ in (
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/projects"),
        ("PUT", "/api/v1/projects/p/jobs/j"),
        ("POST", "/api/v1/users/admin/tokens"),  # no escape through a fresh API token
        ("GET", "/metrics"),
    ):
        status, body = await call(cluster, method, path_, token, json={})
        assert status == 403, (path_, body)
        assert body["error"]["code"] == "password_change_required", body
    assert (await call(cluster, "GET", "/api/v1/auth/me", token))[0] == 200
    new = {"password": "a password of my own", "current_password": password}
    assert (await call(cluster, "PUT", "/api/v1/users/admin/password", token, json=new))[0] == 204
    status, body = await login(cluster, "admin", new["password"])
    assert status == 200 and body["user"]["must_change_password"] is False
    assert (await call(cluster, "GET", "/api/v1/users", body["token"]))[0] == 200


async def test_configured_password_with_must_change_and_the_cli(cluster, tmp_path):
    """Helm gives the password through a Secret with CRONMESH_ADMIN_MUST_CHANGE: the same gate;
    `cronmesh login` says what to do and `cronmesh passwd` does it."""
    await cluster.start(admin_token=None, admin_password="from the secret", admin_must_change=True)
    api = cluster.url()
    env = cli_env(CRONMESH_CREDENTIALS=str(tmp_path / "creds.json"))
    env.pop("CRONMESH_TOKEN")
    code, out, err = await run_cli_env(
        env, "from the secret\n", "--api", api, "login", "-u", "admin", "--password-stdin"
    )
    assert code == 0 and "cronmesh passwd" in err, (out, err)
    code, out, err = await run_cli_env(env, "", "--api", api, "job", "list")
    assert code != 0 and "must change" in (out + err), (out, err)
    code, out, err = await run_cli_env(
        env, "from the secret\nmy own password\n", "--api", api, "passwd", "--password-stdin"
    )
    assert code == 0, (out, err)
    code, out, err = await run_cli_env(env, "", "--api", api, "user", "list")
    assert code == 0 and "admin" in out, (out, err)


async def run_cli_env(env: dict[str, str], stdin: str, *args: str) -> tuple[int, str, str]:
    """The CLI as a subprocess with this stdin (tests/conftest.run_cli has none)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nodes.cli",
        *args,
        env=env,
        cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    return proc.returncode or 0, out.decode(), err.decode()
