"""Processes and probes of a benchmark run: an etcd, ``cronmesh node`` processes, Prometheus text,
CPU time from ``/proc``, the jobs a benchmark makes (run records read straight from etcd:
``bench.records``).

Every process started here is registered in a :class:`Procs`; ``Procs.stop_all()`` (called from a
``finally`` in ``bench.run``, from ``atexit`` and on SIGTERM/SIGHUP) stops them all, so an
exception or Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench import USER_GRPC_VERBOSITY
from cluster.etcd import Etcd
from nodes.devtools.embedded import EtcdProcess, etcd_binary, free_port

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("cluster", "nodes", "logstore")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# -- process registry ----------------------------------------------------------------------------


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Procs:
    """Everything this benchmark started; stopped in reverse order, each at most once."""

    def __init__(self) -> None:
        self._items: list[Stoppable] = []

    def add(self, item: Stoppable) -> None:
        self._items.append(item)

    def remove(self, item: Stoppable) -> None:
        with contextlib.suppress(ValueError):
            self._items.remove(item)

    def stop_all(self) -> None:
        while self._items:
            item = self._items.pop()
            try:
                item.stop()
            except Exception as exc:  # keep stopping the others
                print(f"bench: could not stop {item!r}: {exc}", file=sys.stderr)


class BenchEtcd:
    """The etcd of a benchmark run (``nodes.devtools.embedded.EtcdProcess``: its own session, so a
    Ctrl-C in the terminal reaches only the benchmark, which then stops it)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server = EtcdProcess(tmp / "etcd-data", log_file=tmp / "etcd.log")

    def start(self) -> BenchEtcd:
        """Start etcd; on a failed start, twice more on fresh ports (a free port found by binding
        port 0 can be taken by another process's outgoing connection before etcd binds it: seen
        once in a bench run that had opened and closed thousands of connections)."""
        for attempt in range(3):
            try:
                self.server.start()
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
                self.server.stop()
                self.server = EtcdProcess(
                    self.tmp / f"etcd-data-{attempt + 1}", log_file=self.tmp / "etcd.log"
                )
        return self

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def stop(self) -> None:
        self.server.stop()

    def compact(self, revision: int) -> None:
        """Drop the history of earlier scenarios (physically) so it does not weigh on the next."""
        subprocess.run(
            [
                etcd_binary("etcdctl"),
                "--endpoints",
                self.endpoint,
                "compact",
                str(revision),
                "--physical",
            ],
            check=False,
            capture_output=True,
            timeout=60,
        )

    def __repr__(self) -> str:
        return f"etcd({self.endpoint})"


@contextlib.asynccontextmanager
async def bench_etcd(
    folder: Path, procs: Procs | None = None
) -> AsyncIterator[tuple[BenchEtcd, Etcd]]:
    """The one way a benchmark starts its etcd (D412): in ``folder``, registered in ``procs``
    before it starts, retried on fresh ports, with a connected client; leaving stops both."""
    server = BenchEtcd(folder)
    if procs is not None:
        procs.add(server)
    try:
        async with Etcd([server.start().endpoint]) as etcd:
            yield server, etcd
    finally:
        server.stop()
        if procs is not None:
            procs.remove(server)


# The first admin of every benchmark cluster gets this API token (CRONMESH_ADMIN_TOKEN).
BENCH_ADMIN_TOKEN = "cm_bench-admin-token-0123456789abcdef"


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {BENCH_ADMIN_TOKEN}"}


def trees(specs: list[str]) -> list[tuple[str, Path]]:
    """An A/B benchmark's ``--tree NAME=PATH`` options as (name, absolute path), in the order
    given (the sides alternate in it, swapped every round); none: this tree, named "this"."""
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not (name and sep and path):
            raise SystemExit(f"--tree takes NAME=PATH, not {spec!r}")
        out.append((name, Path(path).resolve()))
    return out or [("this", ROOT)]


def node_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", CRONMESH_ADMIN_TOKEN=BENCH_ADMIN_TOKEN)
    # The benchmark's jobs write into folders of the user running it, as that user (when root:
    # explicitly allowed, D142); the cost of switching users is measured on its own.
    env.setdefault("CRONMESH_ALLOW_ROOT_JOBS", "true")
    env.setdefault("CRONMESH_RUN_AS_DEFAULT", "root")
    # The benchmark keeps 1,000 runs of each of its jobs; the run-history quota (D210) counts
    # every kept run at its worst-case size, so it is lifted to its maximum here.
    env.setdefault("CRONMESH_QUOTA_RUN_HISTORY_BYTES", str(10**12))
    env.pop("GRPC_VERBOSITY", None)
    if USER_GRPC_VERBOSITY is not None:
        env["GRPC_VERBOSITY"] = USER_GRPC_VERBOSITY
    return env


class NodeProc:
    """One ``cronmesh node`` process (in its own session; stopped by SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        *,
        etcd: str,
        prefix: str,
        node_id: str,
        data_dir: Path,
        log_path: Path,
        capacity: int | None,
        properties: Mapping[str, str] | None = None,
        lease_ttl: int | None = None,  # None: the node's default (5 s), as a user gets
        drain_timeout: float = 2.0,
        profile: Path | None = None,
    ) -> None:
        self.node_id = node_id
        self.profile = profile
        self.port = free_port()
        self.log_path = log_path
        args = [
            "--etcd",
            etcd,
            "--listen",
            f"127.0.0.1:{self.port}",
            "--node-id",
            node_id,
            "--prefix",
            prefix,
            "--data-dir",
            str(data_dir),
            "--drain-timeout",
            str(drain_timeout),
            "--log-format",
            "json",
        ]
        if lease_ttl is not None:
            args += ["--lease-ttl", str(lease_ttl)]
        if capacity is not None:  # None: the node's default, as a user who sets nothing gets
            args += ["--capacity", str(capacity)]
        for key, value in (properties or {}).items():
            args += ["--property", f"{key}={value}"]
        self._log = open(log_path, "ab")
        profiler = os.environ.get("BENCH_PROFILER", "bench.profnode")  # or bench.decodecount
        launcher = [profiler, str(profile)] if profile else ["nodes.cli"]
        if not profile and os.environ.get("BENCH_COMPLETION_LINGER"):
            launcher = ["bench.lingernode"]  # the worker's completion linger set (D353)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *launcher, "node", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            env=node_env(),
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()

    def __repr__(self) -> str:
        return f"node({self.node_id}, pid {self.proc.pid})"

    def profiling(self, on: bool) -> None:
        """Switch cProfile on or off (and write the profile) when started with ``profile``."""
        if self.profile is not None and self.alive():
            self.proc.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    async def wait_leading(self, http: aiohttp.ClientSession, within: float = 30.0) -> None:
        """Until the node is ready and leads the scheduler (it is the only candidate)."""
        deadline = time.monotonic() + within
        while True:
            if not self.alive():
                code = self.proc.returncode
                raise RuntimeError(f"{self!r} exited with {code}; see {self.log_path}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{self.url}/metrics") as resp:
                    text = await resp.text()
                if "\ncronmesh_is_leader 1.0" in text:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self!r} did not become leader in {within}s")
            await asyncio.sleep(0.1)


# -- Prometheus text -----------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_prom(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def by_label(samples: Samples, name: str, label: str, **labels: str) -> dict[str, float]:
    want = set(labels.items())
    out: dict[str, float] = {}
    for (n, lab), v in samples.items():
        if n == name and want <= set(lab):
            key = dict(lab).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def diff(after: Samples, before: Samples) -> Samples:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


# -- CPU -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcCpu:
    self_s: float  # user + system of the process itself
    children_s: float  # user + system of its reaped children (the job processes of a node)
    system_s: float = 0.0  # the kernel's share of ``self_s``


def proc_cpu(pid: int) -> ProcCpu:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    fields = data[data.rfind(b")") + 2 :].split()
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ProcCpu((utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK, stime / CLK_TCK)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in first[:8]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / CLK_TCK, sum(ticks) / CLK_TCK


# -- machine -------------------------------------------------------------------------------------


def machine_info(etcd_version: str) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "etcd": etcd_version,
    }


def code_version() -> dict[str, Any]:
    """The commit under test, the product files changed since it, and a hash of the product's
    source as it is on disk (other people may edit the tree while a benchmark runs)."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except OSError:
            return ""
        return out.stdout.strip()

    digest = hashlib.sha1()
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    dirty = git("status", "--porcelain", "--", *PRODUCT)
    return {
        "commit": git("rev-parse", "--short=12", "HEAD"),
        "changed_since_commit": [line.split(maxsplit=1)[-1] for line in dirty.splitlines()],
        "source_sha1": digest.hexdigest()[:12],
    }


async def etcd_version(http: aiohttp.ClientSession, endpoint: str) -> str:
    async with http.get(f"{endpoint}/version") as resp:
        data = json.loads(await resp.text())
    return str(data.get("etcdserver", "?"))


# -- jobs ----------------------------------------------------------------------------------------


async def put_jobs(
    http: aiohttp.ClientSession,
    node: NodeProc,
    project: str,
    n: int,
    *,
    command: str = "true",
    cron: str = "* * * * * *",
    selector: str = "",
    concurrency: int = 16,
    extra: dict[str, Any] | None = None,
) -> list[str]:
    """Create ``n`` jobs through the HTTP API; answers their names."""
    names = [f"j{i:05d}" for i in range(n)]
    sem = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        body: dict[str, Any] = {
            "name": name,
            "command": command,
            "schedules": [{"cron": cron}],
            # nothing is pruned before the benchmark reads it (a job fires at most once a second
            # in windows of a minute or two); 1,000 keeps 5,000 jobs under the run-history quota's
            # ceiling (D210 counts each kept run at its worst case, ~170 KiB), where 10,000 stopped
            # the 800-job scenarios at job 588 with 403 quota_exceeded
            "keep_runs": 1_000,
        }
        if selector:
            body["target"] = {"selector": selector}
        body.update(extra or {})
        async with sem:
            url = f"{node.url}/api/v1/projects/{project}/jobs/{name}"
            async with http.put(url, json=body) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"PUT {url}: {resp.status} {await resp.text()}")

    await asyncio.gather(*(one(name) for name in names))
    return names


# -- time ----------------------------------------------------------------------------------------


async def sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
