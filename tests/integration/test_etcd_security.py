"""A node against an etcd that demands TLS client certificates and user/password auth.

The CA and certificates are made in the test (openssl CLI); etcd users and roles are set up with
etcdctl, then ``auth enable``. The node connects with CA + client cert + user, runs a job, and keeps
running jobs after etcd restarts (its auth token is gone: the client authenticates again).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from cluster.errors import Unavailable
from cluster.etcd import Etcd, Security
from nodes.embedded import EtcdProcess, etcd_binary, free_port
from tests.conftest import InProcessCluster, wait_for

PREFIX = "/secure"
P = "/api/v1/projects/default"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=cronmesh-test-ca",
        cwd=d,
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
        ("root", "extendedKeyUsage=clientAuth"),
    ):
        cn = "cronmesh" if name == "client" else name
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={cn}",
            cwd=d,
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )


@pytest.fixture
def secure_etcd(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    metrics = free_port()
    server = EtcdProcess(
        tmp_path / "etcd",
        scheme="https",
        health_url=f"http://127.0.0.1:{metrics}/health",
        extra_args=[
            "--cert-file",
            str(pki / "server.crt"),
            "--key-file",
            str(pki / "server.key"),
            "--trusted-ca-file",
            str(pki / "ca.crt"),
            "--client-cert-auth",
            "--listen-metrics-urls",
            f"http://127.0.0.1:{metrics}",
        ],
    ).start()

    def ctl(*args: str) -> None:
        subprocess.run(
            [
                etcd_binary("etcdctl"),
                "--endpoints",
                server.endpoint,
                "--cacert",
                str(pki / "ca.crt"),
                "--cert",
                str(pki / "root.crt"),
                "--key",
                str(pki / "root.key"),
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    ctl("user", "add", "root", "--new-user-password", "root-password")
    ctl("user", "grant-role", "root", "root")
    ctl("role", "add", "cronmesh")
    ctl("role", "grant-permission", "cronmesh", "--prefix=true", "readwrite", f"{PREFIX}/")
    ctl("user", "add", "cronmesh", "--new-user-password", "cronmesh-password")
    ctl("user", "grant-role", "cronmesh", "cronmesh")
    ctl("auth", "enable")
    yield server, pki
    server.stop()


async def test_node_runs_jobs_on_etcd_with_tls_client_certs_and_auth(secure_etcd, tmp_path):
    server, pki = secure_etcd
    tls = {
        "etcd_ca": str(pki / "ca.crt"),
        "etcd_cert": str(pki / "client.crt"),
        "etcd_key": str(pki / "client.key"),
    }

    # without the CA (untrusted server) or with a wrong password nothing works
    for security in (
        Security(user="cronmesh", password="cronmesh-password"),
        Security(
            ca=tls["etcd_ca"],
            cert=tls["etcd_cert"],
            key=tls["etcd_key"],
            user="cronmesh",
            password="wrong",
        ),
    ):
        bad = Etcd([server.endpoint], timeout=2, security=security)
        await bad.connect()
        with pytest.raises(Unavailable):
            await bad.range(f"{PREFIX}/")
        await bad.close()

    cluster = InProcessCluster(server.endpoint, PREFIX, tmp_path)
    steady = Etcd(
        [server.endpoint],
        security=Security(
            ca=tls["etcd_ca"],
            cert=tls["etcd_cert"],
            key=tls["etcd_key"],
            user="cronmesh",
            password="cronmesh-password",
        ),
    )
    await steady.connect()
    try:
        await steady.put(f"{PREFIX}/probe", "1")
        first_token = steady._token
        assert first_token
        await cluster.start(
            "secure", etcd_user="cronmesh", etcd_password="cronmesh-password", **tls
        )
        status, body = await cluster.request(
            "PUT", f"{P}/jobs/tls", json={"name": "tls", "command": "echo over-tls"}
        )
        assert status == 201, body

        async def run_once() -> None:
            async def trigger():
                # 503 while the node reconnects after the etcd restart (a refused trigger
                # writes nothing, so asking again cannot make two runs)
                status, run = await cluster.request("POST", f"{P}/jobs/tls/runs", json={})
                assert status in (201, 503), run
                return run if status == 201 else None

            run = await wait_for(trigger, 40, what="trigger accepted")

            async def done():
                s, r = await cluster.request("GET", f"{P}/runs/{run['id']}")
                return s == 200 and r["status"] == "succeeded"

            await wait_for(done, 30, what="run on secured etcd")

        await run_once()
        # etcd restarts: its auth tokens are gone; the node authenticates again and goes on
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        # the same channel, its token now unknown to etcd: renewed and the call retried
        assert (await wait_for(lambda: steady.get(f"{PREFIX}/probe"), 30)).value == b"1"
        assert steady._token and steady._token != first_token
        await run_once()
    finally:
        await steady.close()
        await cluster.close()


async def test_etcd_auth_command_secures_a_tls_etcd_and_a_node_runs_on_it(tmp_path):
    """What the Helm chart's init container (and the bare-metal recipe) runs: `cronmesh etcd-auth`
    against an etcd served over TLS, twice (enable, then check), then a node logs in (D156)."""
    import sys

    from nodes.etcd_auth import etcdctl
    from tests.conftest import ROOT, cli_env

    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    metrics = free_port()
    server = EtcdProcess(
        tmp_path / "etcd",
        scheme="https",
        health_url=f"http://127.0.0.1:{metrics}/health",
        extra_args=[
            f"--cert-file={pki / 'server.crt'}",
            f"--key-file={pki / 'server.key'}",
            f"--listen-metrics-urls=http://127.0.0.1:{metrics}",
        ],
    ).start()
    (tmp_path / "root").write_text("root-secret-1\n")
    (tmp_path / "node").write_text("node-secret-1\n")
    tls = [f"--cacert={pki / 'ca.crt'}"]
    cluster = InProcessCluster(server.endpoint, PREFIX, tmp_path)
    try:
        argv = [
            *(sys.executable, "-m", "nodes.cli", "etcd-auth", "--etcd", server.endpoint),
            *("--prefix", PREFIX, "--etcd-ca", str(pki / "ca.crt"), "--wait", "10"),
            *("--password-file", str(tmp_path / "node")),
            *("--root-password-file", str(tmp_path / "root")),
        ]
        for expected in ("enabled", "checked"):
            res = subprocess.run(
                argv, capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=60
            )
            assert res.returncode == 0, res.stderr
            assert f"etcd authentication {expected}" in res.stdout
        # no credentials: refused; the node user: its prefix only
        assert "user name is empty" in etcdctl(server.endpoint, "get", "/x", tls=tls).stderr
        res = etcdctl(
            server.endpoint, "put", "/x", "1", tls=tls, user="cronmesh", password="node-secret-1"
        )
        assert "permission denied" in res.stderr, res
        # a wrong root password is a clear error, not a reset
        (tmp_path / "root").write_text("guess\n")
        res = subprocess.run(
            argv, capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=60
        )
        assert res.returncode == 1 and "root password given does not open it" in res.stderr

        await cluster.start(
            "tls-auth",
            etcd_ca=str(pki / "ca.crt"),
            etcd_user="cronmesh",
            etcd_password_file=str(tmp_path / "node"),
        )
        status, body = await cluster.request(
            "PUT", f"{P}/jobs/j", json={"name": "j", "command": "true"}
        )
        assert status == 201, body
        status, run = await cluster.request("POST", f"{P}/jobs/j/runs", json={})
        assert status == 201, run

        async def done():
            s, r = await cluster.request("GET", f"{P}/runs/{run['id']}")
            return s == 200 and r["status"] == "succeeded"

        await wait_for(done, 30, what="run on etcd secured by etcd-auth")
    finally:
        await cluster.close()
        server.stop()
