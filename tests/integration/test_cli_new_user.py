"""The CLI as a stranger meets it (D509): each common mistake is answered with its cause and its
fix — a field name with a typo, a schedule that never fires, a YAML syntax error in a file, an
API address without its scheme or where no cronmesh listens, a refused token — and the
confirmations say what was done in words."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from aiohttp import web

from tests.conftest import ROOT, cli_env


async def cli(url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    def go() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nodes.cli", "--api", url, *args],
            capture_output=True,
            text=True,
            cwd=str(ROOT),
            env=env or cli_env(),
            timeout=60,
        )

    res = await asyncio.to_thread(go)  # the node runs in this event loop
    return res.returncode, res.stdout, res.stderr


@pytest.mark.timeout(300)  # a dozen CLI processes: ~1 s of CPU each, 5-10 s at load 15-25
async def test_a_new_users_mistakes_get_their_fix(cluster, tmp_path):
    await cluster.start()
    url = cluster.url()

    typo = tmp_path / "typo.yaml"
    typo.write_text('name: t1\ncommand: "true"\ntimout: 5\n')
    code, _, err = await cli(url, "job", "apply", "-f", str(typo))
    assert code == 1
    assert "timout: unknown field; did you mean 'timeout'?" in err, err

    zone = tmp_path / "zone.yaml"
    zone.write_text('name: t1\ncommand: "true"\nschedules: [{cron: "@daily", timezone: Paris}]\n')
    code, _, err = await cli(url, "job", "apply", "-f", str(zone))
    assert code == 1 and "did you mean 'Europe/Paris'?" in err, err

    broken = tmp_path / "broken.yaml"
    broken.write_text('name: t1\ncommand: "true\nschedules: [{cron: "@daily"}]\n')
    code, _, err = await cli(url, "job", "apply", "-f", str(broken))
    assert code == 1
    assert err.startswith(f"cronmesh: {broken}: not valid YAML"), err
    assert f'in "{broken}", line 3' in err and "<unicode string>" not in err, err

    # saved, but never silent: February 30th matches nothing
    never = tmp_path / "never.yaml"
    never.write_text('name: t2\ncommand: "true"\nschedules: [{cron: "0 0 30 2 *"}]\n')
    code, out, err = await cli(url, "job", "apply", "-f", str(never))
    assert code == 0 and "job default/t2 applied" in out, err
    assert "warning: job default/t2 schedules.0: '0 0 30 2 *' never fires" in err, err

    code, _, err = await cli(url.removeprefix("http://"), "job", "list")
    assert code == 1
    assert f"is not a URL: give the scheme, such as {url}" in err, err

    # a refused token: where it came from says how to get one that works
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({url: {"token": "cm_expired"}}))
    creds.chmod(0o600)
    stored = cli_env(CRONMESH_TOKEN="", CRONMESH_CREDENTIALS=str(creds))
    code, _, err = await cli(url, "job", "list", env=stored)
    assert code == 1 and "invalid, expired or revoked credentials" in err, err
    assert f"the stored login has expired or was revoked: run `cronmesh login --api {url}`" in err
    code, _, err = await cli(url, "--token", "cm_expired", "job", "list", env=stored)
    assert code == 1 and "the --token given was refused" in err, err
    code, _, err = await cli(url, "job", "list", env=cli_env(CRONMESH_TOKEN="cm_expired"))
    assert code == 1 and "CRONMESH_TOKEN was refused" in err, err
    # `run logs` reads its stream on its own HTTP path: the same words
    code, _, err = await cli(url, "run", "logs", "r1", env=stored)
    assert code == 1 and "the stored login has expired or was revoked" in err, err
    code, _, err = await cli(url.removeprefix("http://"), "run", "logs", "r1", env=stored)
    assert code == 1 and "is not a URL: give the scheme" in err, err

    # a workflow's file given to `job apply` (and back): the command to use, not "unknown field"
    code, _, err = await cli(url, "job", "apply", "-f", "docs/examples/etl-workflow.yaml")
    assert code == 1 and "etl is not a job (it has tasks)" in err, err
    assert "apply it with `cronmesh workflow apply -f`" in err, err
    code, _, err = await cli(url, "workflow", "apply", "-f", "docs/examples/hello.yaml")
    assert code == 1 and "apply it with `cronmesh job apply -f`" in err, err
    # what `cronmesh export` writes (`kind`, `project`) applies with `job apply` too
    code, _, err = await cli(url, "export", str(tmp_path / "snap"))
    assert code == 0, err
    exported = tmp_path / "snap" / "default" / "jobs" / "t2.yaml"
    assert "kind: Job" in exported.read_text()
    code, out, err = await cli(url, "job", "apply", "-f", str(exported))
    assert code == 0 and "job default/t2 applied" in out, err
    code, _, err = await cli(url, "-p", "other", "job", "apply", "-f", str(exported))
    assert code == 1 and "t2 is of project 'default', not 'other': add `-p default`" in err, err

    # `--expires-in 0` is refused, not read as "never expires"
    code, out, err = await cli(url, "token", "create", "--expires-in", "0")
    assert code == 1 and out == "", out
    assert "expires_in: Input should be greater than or equal to 60" in err, err

    calendar = tmp_path / "cal.yaml"
    calendar.write_text("name: days-off\ndates: [2026-12-24]\n")
    code, _, err = await cli(url, "calendar", "apply", "-f", str(calendar))
    assert code == 0, err
    code, out, err = await cli(url, "calendar", "delete", "days-off")
    assert code == 0 and out.strip() == "calendar days-off deleted", (out, err)

    # the README's `group bind` on a group not made yet: how to make it
    for args in (("bind", "etl", "primary", "--node", "n1"), ("grant", "etl", "--project", "b")):
        code, _, err = await cli(url, "group", *args)
        assert code == 1 and "group 'etl' not found: create it first" in err, err
        assert "`cronmesh group apply -f FILE` with `name: etl`" in err, err

    code, _, err = await cli(url, "user", "create", "ann", "--role", "default=viewer")
    assert code == 0, err
    code, out, err = await cli(url, "user", "grant", "ann", "--role", "ops=editor")
    assert code == 0 and out.strip() == "user ann: roles default=viewer, ops=editor", (out, err)


async def test_an_address_where_no_cronmesh_listens_is_named():
    async def page(request: web.Request) -> web.Response:
        status = 200 if "whoami" in request.path else 404
        return web.Response(
            status=status, text="<html>not cronmesh</html>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        for api in (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/prefix"):
            code, out, err = await cli(api, "job", "list")
            assert code == 1 and out == "", out
            assert "answered HTTP 404 with something other than cronmesh's JSON" in err, err
            assert "<html>" not in err and "check --api or CRONMESH_API" in err, err
        # a page that answers 200 is not taken for data either
        code, _, err = await cli(f"http://127.0.0.1:{port}", "whoami")
        assert code == 1 and "Traceback" not in err, err
    finally:
        await runner.cleanup()
