"""The CLI authenticates: clear error without credentials, `login` (0600 credentials file),
`whoami`, API tokens made and used with --token, `logout` revoking the session, user admin."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys

import pytest

from tests.conftest import ROOT, cli_env


async def cli(url: str, *args: str, env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
    def go() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nodes.cli", "--api", url, *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=str(ROOT),
            env=env,
            timeout=60,
        )

    res = await asyncio.to_thread(go)  # the node runs in this event loop
    return res.returncode, res.stdout, res.stderr


@pytest.mark.timeout(300)  # a dozen CLI processes: ~1 s of CPU each, 5-10 s at load 15-25
async def test_cli_login_tokens_logout(cluster, tmp_path):
    await cluster.start()
    url = cluster.url()
    creds = tmp_path / "credentials.json"
    admin = cli_env()
    anon = cli_env(CRONMESH_TOKEN="", CRONMESH_CREDENTIALS=str(creds))

    code, _, err = await cli(url, "job", "list", env=anon)
    assert code == 1 and "not logged in" in err and "cronmesh login" in err
    # the login is per API address: the error names the one asked, so a user who logged in
    # through another node of the cluster sees why (found walking the dev cluster)
    assert f"not logged in to {url}" in err and f"cronmesh login --api {url}" in err, err

    code, out, err = await cli(
        url,
        "user",
        "create",
        "erin",
        "--role",
        "default=operator",
        "--password-stdin",
        env=admin,
        stdin="erin's password\n",
    )
    assert code == 0, err
    code, out, _ = await cli(url, "user", "list", env=admin)
    assert "erin" in out and "default=operator" in out

    code, out, err = await cli(
        url, "login", "-u", "erin", "--password-stdin", env=anon, stdin="wrong password\n"
    )
    assert code == 1 and "invalid user name or password" in err
    code, out, err = await cli(
        url, "login", "-u", "erin", "--password-stdin", env=anon, stdin="erin's password\n"
    )
    assert code == 0, err
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    code, out, err = await cli(url, "whoami", env=anon)
    assert code == 0 and out.startswith("erin") and "default=operator" in out, err
    code, out, err = await cli(url, "job", "list", env=anon)
    assert code == 0, err
    code, out, err = await cli(url, "user", "list", env=anon)
    assert code == 1 and "needs cluster admin" in err

    code, out, err = await cli(url, "token", "create", "--description", "ci", env=anon)
    assert code == 0 and out.startswith("cm_"), err
    api_token = out.strip()
    code, out, _ = await cli(url, "token", "list", env=anon)
    assert "ci" in out and "session" in out and api_token not in out

    code, _, err = await cli(url, "logout", env=anon)
    assert code == 0, err
    code, _, err = await cli(url, "whoami", env=anon)
    assert code == 1 and "not logged in" in err
    code, out, err = await cli(url, "--token", api_token, "whoami", env=anon)
    assert code == 0 and out.startswith("erin"), err

    code, out, err = await cli(url, "user", "disable", "erin", env=admin)
    assert code == 0, err
    code, _, err = await cli(url, "--token", api_token, "whoami", env=anon)
    assert code == 1 and "invalid, expired or revoked" in err
