"""#22 item 1: `cronmesh dev` supervises its nodes. A real dev cluster (embedded etcd, two real
node processes); the test kill -9s the node that leads and waits for the supervisor to say so, to
show the leader change read from etcd, and to restart the node, which then answers /healthz; a
Ctrl-C then stops everything with exit code 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from nodes.cli.devsupervisor import read_leader
from nodes.cli.etcd_auth import etcdctl
from nodes.devtools.embedded import free_port
from tests.conftest import ROOT, dev_ports, wait_for

P = "/api/v1/projects/default"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_dev_reports_a_killed_node_the_leader_change_and_restarts_it(tmp_path: Path):
    data = tmp_path / "dev"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRONMESH_", "ETCDCTL_"))}
    out_path = tmp_path / "dev.out"
    for _ in range(3):  # a port another process took between our check and dev's bind: again
        port, etcd_port = dev_ports()
        out = open(out_path, "wb")
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "nodes.cli", "dev", "--nodes", "2", "--port", str(port)),
                *("--etcd-port", str(etcd_port), "--data", str(data)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env, PYTHONUNBUFFERED="1"),
            cwd=str(ROOT),
        )
        banner = await wait_for(
            lambda p=proc: p.poll() is not None or "Press Ctrl-C to stop." in out_path.read_text(),
            120,
            0.3,
            "the dev banner",
        )
        assert banner
        if proc.poll() is None or "already in use" not in out_path.read_text():
            break
        out.close()

    def said(text: str) -> bool:
        assert proc.poll() is None, f"cronmesh dev exited: {out_path.read_text()[-3000:]}"
        return text in out_path.read_text()

    try:
        assert said("Press Ctrl-C to stop.")
        etcd = f"http://127.0.0.1:{etcd_port}"
        password = (data / "etcd-password").read_text().strip()
        leader = await wait_for(
            lambda: read_leader(etcd, "cronmesh", password), 30, 0.5, "a leader"
        )
        res = etcdctl(
            etcd,
            "get",
            f"/cronmesh/nodes/{leader}",
            "--print-value-only",
            user="cronmesh",
            password=password,
        )
        pid = json.loads(res.stdout)["pid"]
        # the banner lists it, as getting-started tells the reader to find it there
        assert f"{leader} (pid {pid}," in out_path.read_text()
        node_port = port + int(leader.rsplit("-", 1)[1]) - 1
        os.kill(pid, signal.SIGKILL)

        await wait_for(
            lambda: said(f"{leader} exited (killed by SIGKILL)"), 30, 0.2, "the exit notice"
        )
        other = "node-2" if leader == "node-1" else "node-1"
        await wait_for(
            lambda: said(f"leader: {other} (was {leader})"), 60, 0.3, "the leader change"
        )
        # the leader change is the cluster's: etcd says the same
        assert read_leader(etcd, "cronmesh", password) == other
        await wait_for(lambda: said(f"{leader} is back"), 90, 0.3, "the restarted node")
        assert _healthy(f"http://127.0.0.1:{node_port}")
        # a new process, not the killed one
        res = etcdctl(
            etcd,
            "get",
            f"/cronmesh/nodes/{leader}",
            "--print-value-only",
            user="cronmesh",
            password=password,
        )
        assert json.loads(res.stdout)["pid"] != pid

        # Ctrl-C with a run going: the supervisor says what the node waits for; a second
        # Ctrl-C stops it at once and everything exits 0 (D245).
        api = f"http://127.0.0.1:{port}"
        admin_pw = (data / "admin-password").read_text().strip()
        login = {"username": "admin", "password": admin_pw}
        async with aiohttp.ClientSession() as anon:
            async with anon.post(f"{api}/api/v1/auth/login", json=login) as r:
                assert r.status == 200, await r.text()
                token = (await r.json())["token"]
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.put(f"{api}{P}/jobs/sleepy", json={"command": "exec sleep 300"}) as r:
                assert r.status == 201, await r.text()
            async with http.post(f"{api}{P}/jobs/sleepy/runs", json={}) as r:
                assert r.status == 201, await r.text()
                run_id = (await r.json())["id"]

            async def running() -> bool:
                async with http.get(f"{api}{P}/runs/{run_id}") as r:
                    return (await r.json())["status"] == "running"

            await wait_for(running, 30, 0.3, "the run to start")
        proc.send_signal(signal.SIGINT)
        await wait_for(
            lambda: "waiting for 1 run(s) to finish (default/sleepy)" in out_path.read_text(),
            30,
            0.2,
            "the drain notice",
        )
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 45)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()
    text = out_path.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "stopping 1 run(s) at once" in text, text[-3000:]


@pytest.mark.timeout(120)
def test_dev_fails_at_once_naming_a_node_that_cannot_start(tmp_path: Path):
    """A real failure: the node refuses its settings. `cronmesh dev` says which node and why (its
    log's last lines) and exits 1, without waiting out the minute of the readiness deadline."""
    port, etcd_port = dev_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRONMESH_", "ETCDCTL_"))}
    res = subprocess.run(
        [
            *(sys.executable, "-m", "nodes.cli", "dev", "--nodes", "1", "--port", str(port)),
            *("--etcd-port", str(etcd_port), "--data", str(tmp_path / "dev")),
        ],
        capture_output=True,
        text=True,
        env=dict(env, CRONMESH_LEASE_TTL="bogus"),
        cwd=str(ROOT),
        timeout=100,
    )
    assert res.returncode == 1, res
    assert "node-1 exited during its start (exit code 2)" in res.stderr, res.stderr
    assert "lease_ttl" in res.stderr, res.stderr
    assert "cronmesh is running" not in res.stdout


def test_dev_refuses_ports_in_use_before_starting_anything(tmp_path: Path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        etcd_port = taken.getsockname()[1]
        res = subprocess.run(
            [
                *(sys.executable, "-m", "nodes.cli", "dev", "--port", str(free_port())),
                *("--etcd-port", str(etcd_port), "--data", str(tmp_path / "dev")),
            ],
            capture_output=True,
            text=True,
            cwd=str(ROOT),
            timeout=60,
        )
    assert res.returncode == 1 and f"port(s) {etcd_port}" in res.stderr, res
    assert "already in use" in res.stderr and not (tmp_path / "dev").exists()


def test_dev_refuses_node_ports_that_overlap_etcds_before_starting_anything(tmp_path: Path):
    """`--port 18380 --etcd-port 18379`: etcd's peer port is 18380 too; the first node used to
    fail to bind ("address already in use") after etcd had started (found following
    getting-started with other ports)."""
    port = free_port()
    res = subprocess.run(
        [
            *(sys.executable, "-m", "nodes.cli", "dev", "--port", str(port)),
            *("--etcd-port", str(port - 1), "--data", str(tmp_path / "dev")),
        ],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=60,
    )
    assert res.returncode == 2, res
    assert f"port(s) {port} asked for twice" in res.stderr, res.stderr
    assert not (tmp_path / "dev").exists()
