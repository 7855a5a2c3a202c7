"""Shared fixtures: a real etcd per test session, a unique key prefix per test, in-process nodes
and `cronmesh node` processes. Waiting is always on a condition with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from nodes.config import NodeConfig
from nodes.daemon import Node
from nodes.embedded import EtcdProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


async def wait_for(
    cond: Callable[[], Awaitable[Any]] | Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``cond`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = cond()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            last = value
        except (AssertionError, aiohttp.ClientError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


# Every node the fixtures start creates its first admin with this API token (a bootstrap token,
# CRONMESH_ADMIN_TOKEN), so tests and the CLI authenticate as that cluster admin.
TEST_ADMIN = "admin"
TEST_ADMIN_TOKEN = "cm_test-admin-token-0123456789abcdef"


# Tests run as root (here and in CI) and their jobs write into root-owned temporary folders, so
# the nodes they start run jobs as root: explicitly allowed, as the default is `nobody` (D142).
# Tests of run_as itself start their nodes with their own settings.
ROOT_JOBS = {"CRONMESH_ALLOW_ROOT_JOBS": "true", "CRONMESH_RUN_AS_DEFAULT": "root"}


def node_env() -> dict[str, str]:
    """Environment a `cronmesh node` process started by a test needs (credentials included)."""
    return dict(os.environ, CRONMESH_ADMIN_TOKEN=TEST_ADMIN_TOKEN, **ROOT_JOBS)


def api_headers(token: str | None = TEST_ADMIN_TOKEN) -> dict[str, str]:
    """Headers that authenticate a test's HTTP calls (for clients other than ``api_session``)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def api_session(**kw: Any) -> aiohttp.ClientSession:
    """The HTTP client every test uses to call a node's API: one place to add credentials."""
    return aiohttp.ClientSession(headers=api_headers(), **kw)


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a `cronmesh` CLI subprocess started by a test (one place for credentials)."""
    env = dict(os.environ, CRONMESH_TOKEN=TEST_ADMIN_TOKEN)
    env.pop("CRONMESH_CREDENTIALS", None)
    return dict(env, **extra)


def run_cli(api_url: str, *args: str, timeout: float = 30) -> tuple[int, str, str]:
    """Run ``cronmesh --api URL ARGS…`` as a subprocess; returns (exit code, stdout, stderr)."""
    res = subprocess.run(
        [sys.executable, "-m", "nodes.cli", "--api", api_url, *args],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env=cli_env(),
        timeout=timeout,
    )
    return res.returncode, res.stdout, res.stderr


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    server = EtcdProcess(tmp_path_factory.mktemp("etcd") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"/t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
async def etcd(etcd_server: EtcdProcess) -> AsyncIterator[Etcd]:
    client = Etcd([etcd_server.endpoint])
    await client.connect()
    yield client
    await client.close()


class InProcessCluster:
    """Nodes running in the test's event loop (fast; for API and single-node behaviour)."""

    def __init__(self, endpoint: str, prefix: str, tmp: Path) -> None:
        self.endpoint = endpoint
        self.prefix = prefix
        self.tmp = tmp
        self.nodes: list[tuple[Node, asyncio.Task[None]]] = []
        self.http = api_session()

    async def start(self, node_id: str = "n1", **overrides: Any) -> Node:
        config = NodeConfig(
            node_id=node_id,
            etcd=[self.endpoint],
            listen=f"127.0.0.1:{free_port()}",
            prefix=self.prefix,
            data_dir=str(self.tmp / "data"),
            lease_ttl=overrides.pop("lease_ttl", 3),
            drain_timeout=overrides.pop("drain_timeout", 5),
            admin_token=overrides.pop("admin_token", TEST_ADMIN_TOKEN),
            allow_root_jobs=overrides.pop("allow_root_jobs", True),
            run_as_default=overrides.pop("run_as_default", "root"),
            **overrides,
        )
        node = Node(config)
        task = asyncio.create_task(node.run())
        self.nodes.append((node, task))
        await wait_for(lambda: node.ready or task.done(), 15, what=f"{node_id} ready")
        if task.done():
            task.result()
        return node

    def url(self, node: Node | None = None, path: str = "") -> str:
        if node is None:  # the first node still running
            node = next((n for n, task in self.nodes if not task.done()), self.nodes[0][0])
        return f"http://{node.config.listen}{path}"

    async def request(
        self, method: str, path: str, node: Node | None = None, **kw: Any
    ) -> tuple[int, Any]:
        async with self.http.request(method, self.url(node, path), **kw) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def stop(self, node: Node) -> None:
        for n, task in self.nodes:
            if n is node:
                n.shutdown()
                await asyncio.wait_for(task, 30)

    async def close(self) -> None:
        for node, _ in self.nodes:
            node.shutdown()
        for _, task in self.nodes:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        await self.http.close()


@pytest.fixture
async def cluster(
    etcd_server: EtcdProcess, prefix: str, tmp_path: Path
) -> AsyncIterator[InProcessCluster]:
    c = InProcessCluster(etcd_server.endpoint, prefix, tmp_path)
    yield c
    await c.close()


class NodeProcess:
    """A real `cronmesh node` process."""

    def __init__(
        self,
        node_id: str,
        args: list[str],
        log_path: Path,
        port: int,
        *,
        host: str = "127.0.0.1",
        wrapper: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``wrapper``: a command the node runs under (``ip netns exec NS``); ``host`` its
        listening address there; ``env``: variables added to the node's environment."""
        self.node_id = node_id
        self.port = port
        self.host = host
        self.log_path = log_path
        self._log = open(log_path, "ab")
        env = dict(node_env(), CRONMESH_LOG_FORMAT="json", PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [*(wrapper or []), sys.executable, "-m", "nodes.cli", "node", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class ProcessCluster:
    def __init__(self, endpoints: list[str], prefix: str, tmp: Path) -> None:
        self.endpoints = endpoints
        self.prefix = prefix
        self.tmp = tmp
        self.procs: list[NodeProcess] = []

    def start(
        self,
        node_id: str,
        *extra: str,
        lease_ttl: int = 3,
        host: str = "127.0.0.1",
        endpoints: list[str] | None = None,
        wrapper: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> NodeProcess:
        port = free_port()
        args = [
            "--etcd",
            ",".join(endpoints or self.endpoints),
            "--listen",
            f"{host}:{port}",
            "--node-id",
            node_id,
            "--prefix",
            self.prefix,
            "--lease-ttl",
            str(lease_ttl),
            "--data-dir",
            str(self.tmp / "data"),
            "--drain-timeout",
            "5",
            *extra,
        ]
        log_path = self.tmp / f"{node_id}.log"
        proc = NodeProcess(node_id, args, log_path, port, host=host, wrapper=wrapper, env=env)
        proc.extra = (extra, lease_ttl, env)  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def restart(self, node: NodeProcess) -> NodeProcess:
        """Start a new process with the same id and options (after the old one died)."""
        node.stop()
        self.procs.remove(node)
        extra, ttl, env = node.extra  # type: ignore[attr-defined]
        return self.start(node.node_id, *extra, lease_ttl=ttl, env=env)

    def close(self) -> None:
        for p in self.procs:
            p.signal(signal.SIGTERM)
        for p in self.procs:
            p.stop()

    def dump_logs(self) -> str:
        out = []
        for p in self.procs:
            with contextlib.suppress(OSError):
                out.append(f"--- {p.node_id} ---\n{p.log_path.read_text()[-4000:]}")
        return "\n".join(out)


@pytest.fixture
def procs(
    etcd_server: EtcdProcess, prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[ProcessCluster]:
    c = ProcessCluster([etcd_server.endpoint], prefix, tmp_path)
    yield c
    c.close()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(c.dump_logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3 server (SeaweedFS on 127.0.0.1) shared by the session; see tests/seaweed.py."""
    from tests.seaweed import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()
