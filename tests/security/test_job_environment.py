"""A job sees none of its node's secrets: not in its environment, not in the node's
``/proc/<pid>/environ`` (issue 18, item 1).

The attack this reproduces: an editor of project ``a`` ran ``env`` in a job, read the admin
password from the node's environment and logged in as cluster admin. Here a real ``cronmesh node``
process is started with every kind of secret a node is given (admin password and bootstrap token,
peer secret, etcd password file, SMTP URL with a password, AWS keys for an S3 log store that
really is used), an editor's job prints its environment and the node's, and none of the values
may appear. The node must still work with them: the run's log goes to S3 with the keys.
"""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import boto3
from botocore.config import Config

from tests.conftest import TEST_ADMIN_TOKEN, api_session, wait_for

A = "/api/v1/projects/a"
FINISHED = ("succeeded", "failed", "timed_out", "cancelled", "lost")


def s3_bucket(server) -> str:
    env = server.env()
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    name = f"t{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


async def editor_token(http, url: str) -> str:
    """A user who is an editor of project ``a`` only, and an API token of theirs."""
    async with http.post(f"{url}/api/v1/projects", json={"name": "a"}) as r:
        assert r.status == 201, await r.text()
    user = {"name": "eve", "roles": {"a": "editor"}, "password": "eve-password-1"}
    async with http.post(f"{url}/api/v1/users", json=user) as r:
        assert r.status == 201, await r.text()
    async with http.post(f"{url}/api/v1/users/eve/tokens", json={"description": "t"}) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["token"])


async def test_a_job_sees_no_secret_of_its_node(procs, s3_server, tmp_path):
    etcd_password_file = tmp_path / "etcd-password"
    etcd_password_file.write_text("etcd-pw-Secret-4242\n")
    secrets = {
        "CRONMESH_ADMIN_PASSWORD": "Adm1n-Secret-Pass-7781",
        "CRONMESH_PEER_SECRET": "peer-Secret-0123456789abcdef",
        "CRONMESH_SMTP_URL": "smtp://mailer:Smtp-Secret-5511@127.0.0.1:2525?from=cm@example.org",
        **s3_server.env(),  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (+ endpoint, region)
    }
    values = [
        "Adm1n-Secret-Pass-7781",
        "peer-Secret-0123456789abcdef",
        "Smtp-Secret-5511",
        "etcd-pw-Secret-4242",
        TEST_ADMIN_TOKEN,  # the bootstrap token every test node is given
        s3_server.env()["AWS_ACCESS_KEY_ID"],
        s3_server.env()["AWS_SECRET_ACCESS_KEY"],
    ]
    bucket = s3_bucket(s3_server)
    node = procs.start(
        "n1",
        "--log-store",
        f"s3://{bucket}/logs",
        env={
            **secrets,
            "CRONMESH_ETCD_PASSWORD_FILE": str(etcd_password_file),
            "CRONMESH_JOB_ENV": "DEPLOYMENT=staging",
            "CRONMESH_JOB_ENV_PASSTHROUGH": "SHARED_SETTING",
            "SHARED_SETTING": "passed-on-purpose",
            "NODE_ONLY_SETTING": "not-for-jobs",
            # the node may run jobs as root here: the worst case for what a job can read
            "CRONMESH_ALLOW_ROOT_JOBS": "true",
            "CRONMESH_RUN_AS_DEFAULT": "root",
        },
    )
    async with api_session() as http:
        await wait_for(lambda: _ready(http, node.url), 30, what="node ready")
        token = await editor_token(http, node.url)
    pid = node.proc.pid
    command = (
        "echo '== env'; env; "
        f"echo '== node environ'; tr '\\0' '\\n' < /proc/{pid}/environ; "
        f"echo '== node cmdline'; tr '\\0' ' ' < /proc/{pid}/cmdline; echo"
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as eve:
        async with eve.put(f"{node.url}{A}/jobs/snoop", json={"command": command}) as r:
            assert r.status == 201, await r.text()
        async with eve.post(f"{node.url}{A}/jobs/snoop/runs", json={}) as r:
            assert r.status == 201, await r.text()
            run_id = (await r.json())["id"]

        async def finished():
            async with eve.get(f"{node.url}{A}/runs/{run_id}") as r:
                run = await r.json()
                return run if run["status"] in FINISHED else None

        run = await wait_for(finished, 30, what="the snooping run")
        assert run["status"] == "succeeded", run
        assert run["attempts"][-1]["log"].startswith(f"s3://{bucket}/"), run  # S3 with the keys

        async def log_text():
            async with eve.get(f"{node.url}{A}/runs/{run_id}/logs") as r:
                text = await r.text()
                return text if r.status == 200 and "== node cmdline" in text else None

        text = await wait_for(log_text, 30, what="the run's log")
    job_env = _section(text, "== env", "== node environ")
    node_environ = _section(text, "== node environ", "== node cmdline")
    assert job_env and node_environ, text
    for value in values:
        assert value not in text, f"a node secret reached the job: {value[:6]}…"
    names = {line.split("=", 1)[0] for line in job_env if "=" in line}
    allowed = {"PATH", "HOME", "LANG", "TZ", "PWD", "SHLVL", "_", "USER", "LOGNAME"}
    allowed |= {"DEPLOYMENT", "SHARED_SETTING"}
    unexpected = {n for n in names if n not in allowed and not n.startswith(("LC_", "CRONMESH_"))}
    assert not unexpected, f"node variables leaked into the job: {sorted(unexpected)}"
    assert "DEPLOYMENT=staging" in job_env and "SHARED_SETTING=passed-on-purpose" in job_env
    assert "NODE_ONLY_SETTING" not in names and "CRONMESH_NODE=n1" in job_env
    # the node still holds its ordinary settings; only the secrets were taken out
    assert any(line.startswith("NODE_ONLY_SETTING=") for line in node_environ)


def _section(text: str, start: str, end: str) -> list[str]:
    lines = [line.split(" ", 2)[-1] for line in text.splitlines()]  # "<time> stdout <line>"
    try:
        return lines[lines.index(start) + 1 : lines.index(end)]
    except ValueError:
        return []


async def _ready(http, url: str) -> bool:
    try:
        async with http.get(f"{url}/readyz") as r:
            return r.status == 200
    except OSError:
        await asyncio.sleep(0.1)
        return False
