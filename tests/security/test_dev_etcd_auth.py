"""#18 item 6: a job cannot reach the control plane of a `cronmesh dev` cluster.

Measured before: a job wrote a key into the dev etcd over plain HTTP (no auth). Now `cronmesh dev`
turns etcd authentication on (D156); the nodes log in as ``cronmesh``, whose role covers
``/cronmesh/`` only. A job that tries etcd without credentials (etcdctl and the HTTP gateway) is
refused, and nothing it tried to write exists afterwards.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nodes.cli.etcd_auth import etcdctl
from nodes.devtools.embedded import etcd_binary
from tests.conftest import ROOT, dev_ports, wait_for

P = "/api/v1/projects/default"


@pytest.fixture
def dev_cluster(tmp_path: Path):
    data = tmp_path / "dev"
    port, etcd_port = dev_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRONMESH_", "ETCDCTL_"))}
    log = open(tmp_path / "dev.log", "ab")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "nodes.cli", "dev", "--nodes", "1", "--port", str(port)),
            *("--etcd-port", str(etcd_port), "--data", str(data)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(ROOT),
    )
    try:
        yield proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{etcd_port}", data
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        if proc.returncode not in (0, None):
            print((tmp_path / "dev.log").read_text()[-4000:])


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=15), **kw) as r:
        return r.status, await r.json() if r.content_type == "application/json" else await r.text()


@pytest.mark.timeout(180)
async def test_a_job_in_a_dev_cluster_cannot_read_or_write_etcd(dev_cluster):
    proc, api, etcd, data = dev_cluster

    async def up() -> bool:
        assert proc.poll() is None, "cronmesh dev exited"
        try:
            async with aiohttp.ClientSession() as http:
                return (await call(http, "GET", f"{api}/readyz"))[0] == 200
        except aiohttp.ClientError:
            return False

    await wait_for(up, 90, interval=0.3, what="cronmesh dev ready")
    # the secrets it made are the owner's only (the folder is traverse-only, 0711, so jobs running
    # as another user reach their run folder under it and can list nothing there: D143)
    assert stat.S_IMODE(data.stat().st_mode) in (0o700, 0o711)
    for name in ("etcd-password", "etcd-root-password", "admin-password"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    root_pw = (data / "etcd-root-password").read_text().strip()
    node_pw = (data / "etcd-password").read_text().strip()

    ctl = etcd_binary("etcdctl")
    attack = (
        f"{ctl} --endpoints {etcd} get --prefix /cronmesh --keys-only; echo read=$?\n"
        f"{ctl} --endpoints {etcd} put /cronmesh/evil x; echo write=$?\n"
        f"{ctl} --endpoints {etcd} put /evil x; echo outside=$?\n"
        # the HTTP/JSON gateway, as in the original report (key /cronmesh/evil2, value x)
        f'curl -s -X POST {etcd}/v3/kv/put -d \'{{"key":"L2Nyb25tZXNoL2V2aWwy","value":"eA=="}}\''
        "; echo; echo done\n"
    )
    password = (data / "admin-password").read_text().strip()
    async with aiohttp.ClientSession() as anon:
        status, body = await call(
            anon,
            "POST",
            f"{api}/api/v1/auth/login",
            json={"username": "admin", "password": password},
        )
        assert status == 200, body
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {body['token']}"}) as http:
        status, body = await call(http, "PUT", f"{api}{P}/jobs/probe", json={"command": attack})
        assert status == 201, body
        status, run = await call(http, "POST", f"{api}{P}/jobs/probe/runs", json={})
        assert status == 201, run

        async def finished() -> dict[str, Any] | None:
            _, r = await call(http, "GET", f"{api}{P}/runs/{run['id']}")
            return r if r.get("finished_at") else None

        done = await wait_for(finished, 60, interval=0.3, what="probe job finished")
        assert done["status"] == "succeeded", done
        status, out = await call(http, "GET", f"{api}{P}/runs/{run['id']}/logs")
        assert status == 200, out
    assert "read=0" not in out and "read=" in out, out
    assert "write=0" not in out and "outside=0" not in out, out
    assert "user name is empty" in out, out
    assert "done" in out and '"revision"' not in out, out  # the gateway answered an error

    # Nothing the job tried exists; the control plane itself is there (the check can fail).
    for key in ("/cronmesh/evil", "/cronmesh/evil2", "/evil"):
        res = etcdctl(etcd, "get", key, "--print-value-only", user="root", password=root_pw)
        assert res.returncode == 0 and res.stdout.strip() == "", (key, res)
    res = etcdctl(
        etcd, "get", "--prefix", "/cronmesh/nodes/", "--keys-only", user="root", password=root_pw
    )
    assert "/cronmesh/nodes/node-1" in res.stdout, res
    # The nodes' own user reaches its prefix and nothing else.
    res = etcdctl(etcd, "put", "/cronmesh/probe", "1", user="cronmesh", password=node_pw)
    assert res.returncode == 0, res
    res = etcdctl(etcd, "put", "/elsewhere", "1", user="cronmesh", password=node_pw)
    assert res.returncode != 0 and "permission denied" in res.stderr, res


def test_enable_auth_is_idempotent_across_restarts(tmp_path: Path):
    """`cronmesh dev` restarted on the same data folder keeps its etcd users and passwords."""
    from nodes.cli.etcd_auth import EtcdAuthError, enable_auth
    from nodes.devtools.embedded import EtcdProcess

    server = EtcdProcess(tmp_path / "etcd").start()
    try:
        first = enable_auth(server.endpoint, tmp_path)
        pw = first.read_text()
        server.stop()
        server.start()
        assert enable_auth(server.endpoint, tmp_path) == first and first.read_text() == pw
        res = etcdctl(server.endpoint, "get", "/cronmesh/x", user="cronmesh", password=pw.strip())
        assert res.returncode == 0, res
        # the root password lost: a clear error, never a silent reset of a secured etcd
        (tmp_path / "etcd-root-password").write_text("wrong\n")
        with pytest.raises(EtcdAuthError, match="remove the data folder"):
            enable_auth(server.endpoint, tmp_path)
    finally:
        server.stop()
