"""Shared fixtures: a real etcd per test session, a unique key prefix per test, in-process nodes
and `cronmesh node` processes. Waiting is always on a condition with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from cluster.etcd import Etcd
from cluster.keys import Keys
from nodes.config import NodeConfig
from nodes.daemon.node import Node
from nodes.devtools.embedded import EtcdProcess, free_port

ROOT = Path(__file__).resolve().parent.parent

# A node log line that shows an unexpected exception: logged with its traceback (log.exception:
# the JSON "exception" field), an uncaught one, a crashed worker task, an unretrieved task error.
UNEXPECTED_IN_LOG = re.compile(
    r'"exception": |^Traceback \(most recent call last\)|"worker task failed"|"worker stopped"'
    r"|Task exception was never retrieved|Exception in callback"
)


class NodeTeardownError(AssertionError):
    """A node of the test crashed, exited with an unexpected code or logged an exception."""


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
# the nodes they start run jobs as root: explicitly allowed, as the default is a uid per run
# (`dynamic`, D205; D142).
# Tests of run_as itself start their nodes with their own settings.
ROOT_JOBS = {"CRONMESH_ALLOW_ROOT_JOBS": "true", "CRONMESH_RUN_AS_DEFAULT": "root"}


# The chaos scenarios keep every run of their window (keep_runs 100,000) and the run-history quota
# counts each kept run at its worst-case size (D210), so process nodes lift it; the quota's own
# tests set it explicitly (tests/security/test_run_history_quota.py).
HISTORY_UNBOUNDED = {"CRONMESH_QUOTA_RUN_HISTORY_BYTES": str(10**12)}


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def dev_ports(nodes: int = 2) -> tuple[int, int]:
    """Ports for ``cronmesh dev --nodes N --port p --etcd-port e``: ``p`` … ``p + N - 1`` (the
    nodes), ``e`` and ``e + 1`` (etcd's client and peer ports) all free now and different.
    Free now only: a test that must not fail on a port taken meanwhile starts dev again."""
    while True:
        port, etcd_port = free_port(), free_port()
        wanted = {*range(port, port + nodes), etcd_port, etcd_port + 1}
        if len(wanted) == nodes + 2 and all(port_free(p) for p in wanted):
            return port, etcd_port


def node_env() -> dict[str, str]:
    """Environment a `cronmesh node` process started by a test needs (credentials included)."""
    return dict(os.environ, CRONMESH_ADMIN_TOKEN=TEST_ADMIN_TOKEN, **ROOT_JOBS, **HISTORY_UNBOUNDED)


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
        self.expected_fatal: set[str] = set()  # node ids a test stops fatally on purpose
        self.http = api_session()

    async def start(self, node_id: str = "n1", **overrides: Any) -> Node:
        config = NodeConfig(
            node_id=node_id,
            etcd=[self.endpoint],
            listen=overrides.pop("listen", None) or f"127.0.0.1:{free_port()}",
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
        """Stop every node; then fail (NodeTeardownError) if a node's task ended with an error or
        did not stop: a node that crashed during a test must not pass unnoticed."""
        for node, _ in self.nodes:
            node.shutdown()
        problems = []
        for node, task in self.nodes:
            try:
                await asyncio.wait_for(asyncio.shield(task), 30)
            except TimeoutError:
                problems.append(f"{node.config.node_id}: did not stop within 30 s\n{stacks()}")
                task.cancel()
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
            except Exception as exc:
                problems.append(f"{node.config.node_id}: node task failed: {exc!r}")
            else:
                if node.fatal and node.config.node_id not in self.expected_fatal:
                    problems.append(f"{node.config.node_id}: stopped fatally: {node.fatal}")
        await self.http.close()
        if problems:
            raise NodeTeardownError("\n".join(problems))


def stacks(limit: int = 60) -> str:
    """Where every task of this loop waits: what a node that does not stop is stuck on."""
    out = []
    for task in list(asyncio.all_tasks())[:limit]:
        where, coro = [], task.get_coro()
        while coro is not None and len(where) < 12:  # the await chain, outermost first
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is not None:
                where.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
        out.append(f"  {task.get_name()}: {' -> '.join(where)}")
    return "\n".join(out)


class LogWatch:
    """A structlog processor put first while in-process nodes run: it records the entries that
    show an unexpected exception (logged with a traceback, a crashed worker task)."""

    EVENTS = frozenset({"worker task failed", "worker stopped", "session failed"})

    def __init__(self, allow: list[re.Pattern[str]]) -> None:
        self.allow = allow
        self.found: list[str] = []

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("exc_info") or "exception" in event or event.get("event") in self.EVENTS:
            exc = sys.exc_info()[1]
            line = f"{event.get('event')!s} {exc!r}" if exc else repr(event)[:400]
            if not any(a.search(line) for a in self.allow) and len(self.found) < 5:
                self.found.append(line)
        return event


@pytest.fixture
async def cluster(
    etcd_server: EtcdProcess, prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[InProcessCluster]:
    marker = request.node.get_closest_marker("node_log_allows")
    watch = LogWatch([re.compile(a) for a in (marker.args if marker else ())])
    config = structlog.get_config()
    structlog.configure(processors=[watch, *config["processors"]])
    c = InProcessCluster(etcd_server.endpoint, prefix, tmp_path)
    try:
        yield c
        await c.close()
    finally:
        structlog.configure(processors=config["processors"])
    if watch.found:
        raise NodeTeardownError("unexpected exceptions logged:\n" + "\n".join(watch.found))


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
        self.sent: set[int] = set()  # signals the test sent (their deaths are expected)
        self.expected_codes: set[int] = set()  # other exit codes the test expects
        self.problems: list[str] = []
        self._terminated = False
        self._log = open(log_path, "ab")
        self._log_from = self._log.tell()  # this incarnation's lines (a restart appends)
        self._started = False
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
            self.sent.add(sig)
            self._terminated |= sig == signal.SIGTERM
            self.proc.send_signal(sig)

    def started(self) -> bool:
        """The node logged "node started": its SIGTERM handler is in place (it is installed
        just before; until then SIGTERM kills the interpreter, exit -15)."""
        if not self._started:
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(self._log_from)
                    self._started = b'"node started"' in f.read()
            except OSError:
                return False
        return self._started

    def terminate(self, startup: float = 60) -> None:
        """SIGTERM once (a second one could hit the node after its loop closed: exit -15) — and
        not before the node has started (up to ``startup`` s): a test that ends while a
        restarted node is still importing, slow on a loaded machine, would kill it before its
        handler exists (exit -15), which says nothing about the node (D326)."""
        if self.alive() and not self._terminated:
            deadline = time.monotonic() + startup
            while self.alive() and not self.started() and time.monotonic() < deadline:
                time.sleep(0.05)
            self._terminated = True
            if self.alive():
                self.proc.terminate()

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.problems.append(f"did not stop within {timeout:g} s of SIGTERM: killed")
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def exit_problem(self) -> str | None:
        """Why the exit code is unexpected: a node stops with 0 (SIGTERM: graceful), or dies of
        a signal the test sent it, or with a code the test said to expect."""
        code = self.proc.poll()
        if code is None:
            return "still running"
        if code == 0 or code in self.expected_codes or -code in self.sent:
            return None
        return f"exit code {code}"

    def log_problems(self, allow: list[re.Pattern[str]]) -> list[str]:
        """Unexpected exceptions in the node's log: entries logged with a traceback (log.exception
        or an uncaught one), crashed tasks, unretrieved task exceptions."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return [f"log unreadable: {exc}"]
        out = []
        for line in text.splitlines():
            if UNEXPECTED_IN_LOG.search(line) and not any(a.search(line) for a in allow):
                out.append(line[:400])
                if len(out) >= 5:
                    break
        return out


class ProcessCluster:
    def __init__(self, endpoints: list[str], prefix: str, tmp: Path) -> None:
        self.endpoints = endpoints
        self.prefix = prefix
        self.tmp = tmp
        self.procs: list[NodeProcess] = []
        self.retired: list[NodeProcess] = []
        self.allow_in_logs: list[re.Pattern[str]] = []  # log lines a test expects (regexes)

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
        self.retired.append(node)  # still checked at teardown
        extra, ttl, env = node.extra  # type: ignore[attr-defined]
        return self.start(node.node_id, *extra, lease_ttl=ttl, env=env)

    def close(self) -> None:
        for p in self.procs:
            p.terminate()  # not "sent by the test": a node must then exit 0
        for p in self.procs:
            p.stop()

    def problems(self) -> list[str]:
        """What went wrong with the nodes, checked after ``close``: exit codes and logs."""
        out = []
        for p in [*self.retired, *self.procs]:
            why = [*p.problems]
            if (code := p.exit_problem()) is not None:
                why.append(code)
            why += [f"unexpected in its log: {line}" for line in p.log_problems(self.allow_in_logs)]
            out += [f"{p.node_id} ({p.log_path.name}): {w}" for w in why]
        return out

    def close_and_check(self) -> None:
        """``close``, then fail (NodeTeardownError) on an unexpected exit code or exception."""
        self.close()
        problems = self.problems()
        if problems:
            raise NodeTeardownError("\n".join(problems))

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
    marker = request.node.get_closest_marker("node_log_allows")
    if marker is not None:
        c.allow_in_logs += [re.compile(a) for a in marker.args]
    yield c
    c.close()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(c.dump_logs())
    problems = c.problems()
    if problems:
        print(c.dump_logs())
        raise NodeTeardownError("\n".join(problems))


# Tests that run one at a time on one xdist worker (D325): the chaos scenarios (3 etcd members
# and 3 nodes each, timing-bound verdicts: gaps within the lease TTL, every tick on time) and the
# two checks that keep both cores busy on their own (the mutation check runs two pytest processes
# at once; the role fuzzer sends requests as fast as a node answers). They never overlap each
# other; the other worker runs the rest meanwhile.
SERIAL = (
    "tests/chaos/",
    "tests/integration/test_mutation_check.py",
    "tests/security/test_fuzz_roles.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's scheduler with one work unit for the SERIAL tests and one per other test. (Not
    `--dist loadgroup`: its `xdist_group` marks are lost with pytest 9, whose items no longer
    take the suffixed node id xdist 3.8 sets.) Units go out largest first, so the serial lane,
    the longest, starts at once."""
    from xdist.scheduler import LoadScopeScheduling

    class SerialLane(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "serial" if nodeid.startswith(SERIAL) else nodeid

    return SerialLane(config, log)


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
