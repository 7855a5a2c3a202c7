"""``cronmesh dev``: an embedded etcd and N nodes on this machine, until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from nodes.cli.etcd_auth import EtcdAuthError, enable_auth, write_secret_file
from nodes.devtools.embedded import EtcdProcess

ETCD_USER = "cronmesh"


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _admin_password(data: Path) -> tuple[str, str]:
    """The dev cluster's admin password: CRONMESH_ADMIN_PASSWORD, else one generated once and kept
    (0600) in the data folder, so a restarted dev cluster keeps the same admin."""
    path = data / "admin-password"
    given = os.environ.get("CRONMESH_ADMIN_PASSWORD")
    if given:
        password = given
    elif path.exists():
        password = path.read_text().strip()
    else:
        password = secrets.token_urlsafe(12)
    write_secret_file(path, password)
    return str(path), password


def _secrets_key(data: Path) -> str:
    """The dev cluster's key ring for project secrets: CRONMESH_SECRETS_KEY_FILE, else one key
    generated once and kept (0600) in the data folder, so restarts still open every secret."""
    given = os.environ.get("CRONMESH_SECRETS_KEY_FILE")
    if given:
        return given
    path = data / "secrets.key"
    if not path.exists():
        from cluster.secretbox import new_key

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_key() + "\n")
    return str(path)


def _jobs_user() -> str:
    """Who the dev nodes run jobs as (D142), for the banner."""
    if os.geteuid() != 0:
        return "you (the nodes' user); a job's run_as needs nodes running as root"
    user = os.environ.get("CRONMESH_RUN_AS_DEFAULT") or "dynamic"
    if user == "dynamic":
        return "a uid of each run's own unless a job's run_as names a user of CRONMESH_RUN_AS_USERS"
    return f"{user!r} unless a job's run_as names a user of CRONMESH_RUN_AS_USERS"


def main(args: argparse.Namespace) -> int:
    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)  # etcd data, passwords, every project's logs: the owner only
    etcd = EtcdProcess(
        data / "etcd",
        client_port=args.etcd_port,
        peer_port=args.etcd_port + 1,
        log_file=data / "etcd.log",
    )
    print(f"starting etcd on {etcd.endpoint} (data in {data / 'etcd'}) ...", flush=True)
    etcd.start()
    # etcd with authentication (D156): the nodes log in as a user whose role covers the cronmesh
    # prefix only, so a job (or anything on this machine) without the password cannot read or
    # write the control plane over the loopback port.
    try:
        etcd_password_file = enable_auth(etcd.endpoint, data, user=ETCD_USER)
    except EtcdAuthError as exc:
        etcd.stop()
        print(f"cannot set up etcd authentication: {exc}", file=sys.stderr)
        return 1
    nodes: list[subprocess.Popen[bytes]] = []
    ports = [args.port + i for i in range(args.nodes)]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    password_file, password = _admin_password(data)
    secrets_key = _secrets_key(data)
    try:
        for i, port in enumerate(ports, 1):
            log = open(data / f"node-{i}.log", "ab")
            env = dict(
                os.environ,
                CRONMESH_LOG_FORMAT="json",
                CRONMESH_ADMIN_PASSWORD_FILE=password_file,
                CRONMESH_SECRETS_KEY_FILE=secrets_key,
                # links in notifications open the first node's UI (D256)
                CRONMESH_PUBLIC_URL=os.environ.get("CRONMESH_PUBLIC_URL")
                or f"http://127.0.0.1:{ports[0]}",
            )
            nodes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "nodes.cli",
                        "node",
                        "--etcd",
                        etcd.endpoint,
                        "--listen",
                        f"127.0.0.1:{port}",
                        "--node-id",
                        f"node-{i}",
                        "--data-dir",
                        str(data),
                        "--etcd-user",
                        ETCD_USER,
                        "--etcd-password-file",
                        str(etcd_password_file),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        deadline = time.monotonic() + 30
        while not all(_ready(p) for p in ports):
            if stopping or time.monotonic() > deadline:
                print("nodes did not become ready; see the logs in", data, file=sys.stderr)
                return 1
            time.sleep(0.1)
        print(
            f"\ncronmesh is running: {args.nodes} node(s), API http://127.0.0.1:{ports[0]}"
            + (f" (also {', '.join(str(p) for p in ports[1:])})" if len(ports) > 1 else "")
            + f"\n  etcd {etcd.endpoint} with authentication: nodes log in as {ETCD_USER!r}"
            + f" (password in {etcd_password_file}; root's in {data / 'etcd-root-password'})"
            + f"\n  logs in {data}"
            + f"\n  admin: {os.environ.get('CRONMESH_ADMIN_USER', 'admin')} / {password}"
            + f" (kept in {password_file}); node-to-node calls are signed (security level 1)"
            + f"\n  project secrets are encrypted with the key ring in {secrets_key}"
            + f"\n  jobs run as {_jobs_user()}"
            + f"\n  log in: .venv/bin/cronmesh --api http://127.0.0.1:{ports[0]} login -u "
            + os.environ.get("CRONMESH_ADMIN_USER", "admin")
            + "\n  try: .venv/bin/cronmesh job apply -f docs/examples/hello.yaml"
            + "\n       .venv/bin/cronmesh run list"
            + "\nPress Ctrl-C to stop.",
            flush=True,
        )
        while not stopping:
            for i, node in enumerate(nodes, 1):
                if node.poll() is not None:
                    print(f"node-{i} exited with {node.returncode}; see {data}/node-{i}.log")
                    stopping = True
            time.sleep(0.2)
    finally:
        print("\nstopping ...", flush=True)
        for node in nodes:
            if node.poll() is None:
                node.terminate()
        for node in nodes:
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()
        etcd.stop()
    return 0
