"""`cronmesh inspect` reads an etcd with authentication on, as `cronmesh dev` and the Helm chart
run it (D510): without a user it says which flags to give; with them it reads the state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nodes.cli.etcd_auth import enable_auth
from nodes.devtools.embedded import EtcdProcess
from tests.conftest import ROOT, cli_env


def inspect(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in cli_env().items() if not k.startswith("CRONMESH_ETCD")}
    return subprocess.run(
        [sys.executable, "-m", "nodes.cli", "inspect", *args],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env=env,
        timeout=60,
    )


def test_inspect_logs_in_to_an_etcd_with_auth(tmp_path: Path):
    server = EtcdProcess(tmp_path / "etcd").start()
    try:
        password = enable_auth(server.endpoint, tmp_path)  # the node user `cronmesh`, as dev's
        base = ("--etcd", server.endpoint, "--prefix", "/cronmesh")

        res = inspect("leader", *base)
        assert res.returncode == 1
        assert "user name is empty" in res.stderr
        assert "give --etcd-user and --etcd-password-file" in res.stderr, res.stderr

        res = inspect("leader", *base, "--etcd-user", "cronmesh")
        assert res.returncode == 1 and "--etcd-user needs --etcd-password-file" in res.stderr

        res = inspect(
            "leader", *base, "--etcd-user", "cronmesh", "--etcd-password-file", str(password)
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("leader: - (fencing revision"), res.stdout
    finally:
        server.stop()
