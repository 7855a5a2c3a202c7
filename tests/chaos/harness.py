"""Chaos harness: a 3-member etcd cluster on loopback, a TCP proxy that loses replies, and the
per-execution history that jobs write (checked against the run records in etcd).

The history: every execution of a harness job appends one ``start`` and one ``end`` line to a
shared file, built from the ``CRONMESH_*`` variables the worker passes (the fencing token is
``CRONMESH_RUN_ID`` + ``CRONMESH_CLAIM_REVISION``). A line is short and written with one
``O_APPEND`` write, so lines of concurrent executions never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from nodes.embedded import EtcdProcess, free_port
from tests.conftest import ProcessCluster, api_session

# -- etcd cluster -------------------------------------------------------------------------------


class EtcdCluster:
    """``size`` etcd members on loopback; members can be killed, paused and restarted."""

    def __init__(
        self, root: Path, size: int = 3, also_on: str | None = None, compaction: str | None = None
    ) -> None:
        """``also_on``: a second address every member also serves clients on (a veth);
        ``compaction``: the auto-compaction retention (e.g. ``30s``; default that of EtcdProcess)."""
        self.root, self.size, self.also_on = root, size, also_on
        self.compaction = compaction
        self.members = self._members("")
        self.paused: set[int] = set()

    def _members(self, suffix: str) -> list[EtcdProcess]:
        members = [
            EtcdProcess(
                self.root / f"etcd-{i + 1}{suffix}",
                name=f"m{i + 1}",
                log_file=self.root / f"etcd-{i + 1}{suffix}.log",
            )
            for i in range(self.size)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        for m in members:
            m.initial_cluster = initial
            if self.compaction:  # given twice, etcd takes the last value
                m.extra_args += ["--auto-compaction-retention", self.compaction]
            if self.also_on:  # given twice, etcd takes the last list
                both = f"{m.endpoint},http://{self.also_on}:{m.client_port}"
                m.extra_args += ["--listen-client-urls", both]
        return members

    def endpoints_on(self, host: str) -> list[str]:
        return [f"http://{host}:{m.client_port}" for m in self.members]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self, timeout: float = 30, attempts: int = 3) -> EtcdCluster:
        """Start every member; a member that cannot start (a free port taken by another process
        between choosing and binding it) costs a fresh set of ports, never a leaked member."""
        for attempt in range(attempts):
            try:
                for m in self.members:
                    m.start(wait=False)
                for m in self.members:
                    m.wait_healthy(timeout)
                return self
            except RuntimeError:
                self.stop()
                if attempt == attempts - 1:
                    raise
                self.members = self._members(f"-retry{attempt + 1}")
        return self

    def kill(self, i: int) -> None:
        self.resume(i)
        self.members[i].kill()

    def restart(self, i: int, timeout: float = 30) -> None:
        """Start a killed member again on its data dir (it rejoins with its identity)."""
        self.members[i].start(wait=False)

    def pause(self, i: int) -> None:
        proc = self.members[i].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGSTOP)
            self.paused.add(i)

    def resume(self, i: int) -> None:
        proc = self.members[i].proc
        if i in self.paused and proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def alive(self, i: int) -> bool:
        proc = self.members[i].proc
        return proc is not None and proc.poll() is None and i not in self.paused

    def wait_healthy(self, timeout: float = 30) -> None:
        for i, m in enumerate(self.members):
            if self.alive(i):
                m.wait_healthy(timeout)

    def stop(self) -> None:
        for i in range(len(self.members)):
            self.resume(i)
        for m in self.members:
            m.stop()


# -- TCP proxy ----------------------------------------------------------------------------------


@dataclass
class ProxyStats:
    connections: int = 0
    replies_dropped: int = 0  # connections cut after the request went through, reply discarded
    cuts: int = 0  # connections cut by ``cut_all``
    delayed_chunks: int = 0


class TcpProxy:
    """A byte proxy in front of one etcd member. gRPC multiplexes every call of a node over one
    HTTP/2 connection, so "drop a reply" means: the request bytes reached etcd (it may apply the
    transaction), the reply bytes are thrown away and the connection is cut. The client cannot
    tell whether its transaction applied: its outcome is unknown."""

    def __init__(self, target_host: str, target_port: int, *, seed: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.drop_rate = 0.0  # per reply chunk, after a request was forwarded on the connection
        self.delay = 0.0  # seconds added to every chunk, both ways
        self.armed = 0  # drop the next ``armed`` replies (each: one connection cut)
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self._conns.add(pair)
        sent = asyncio.Event()  # a request went upstream since the last reply

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            while data := await src.read(65536):
                if self.delay:
                    self.stats.delayed_chunks += 1
                    await asyncio.sleep(self.delay)
                if not up and sent.is_set() and self._drop():
                    self.stats.replies_dropped += 1
                    return  # the reply is lost: cut both sides without forwarding it
                dst.write(data)
                await dst.drain()
                if up:
                    sent.set()
                else:
                    sent.clear()

        tasks = [
            asyncio.create_task(pump(reader, up_writer, True)),
            asyncio.create_task(pump(up_reader, writer, False)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for w in pair:
                w.transport.abort()
            self._conns.discard(pair)
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                    await t

    def _drop(self) -> bool:
        if self.armed > 0:
            self.armed -= 1
            return True
        return self._rng.random() < self.drop_rate

    def cut_all(self) -> None:
        """Cut every open connection at once (a network blip)."""
        for pair in list(self._conns):
            self.stats.cuts += 1
            for w in pair:
                w.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.cut_all()
            await self._server.wait_closed()


# -- history ------------------------------------------------------------------------------------


def history_command(path: Path, work: float = 0.0, body: str = "") -> str:
    """A job command that records its execution in ``path`` (start, ``work`` s of sleep or the
    shell ``body``, end)."""
    fields = (
        '"$CRONMESH_JOB" "${CRONMESH_SCHEDULED_AT:--}" "$CRONMESH_RUN_ID" "$CRONMESH_ATTEMPT" '
        '"$CRONMESH_CLAIM_REVISION" "$CRONMESH_NODE"'
    )
    line = f"printf '%s %s %s %s %s %s %s %s\\n' PHASE {fields} \"$(date +%s.%N)\" >> {path}"
    sleep = f"sleep {work:g}; " if work else ""
    middle = f"{body}; " if body else ""
    return f"{line.replace('PHASE', 'start')}; {sleep}{middle}{line.replace('PHASE', 'end')}"


@dataclass(frozen=True)
class Execution:
    phase: str
    job: str
    tick: str
    run: str
    attempt: int
    claim_revision: int
    node: str
    at: float


def read_history(path: Path) -> list[Execution]:
    out: list[Execution] = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 8:
                continue
            phase, job, tick, run, attempt, rev, node, at = parts
            out.append(Execution(phase, job, tick, run, int(attempt), int(rev), node, float(at)))
    return out


def tick_key(value: str) -> str:
    """One spelling per instant: ``2026-01-01T01:00:01+01:00`` and ``…T00:00:01Z`` are the same
    tick (keys compared as strings would call them two)."""
    if value in ("", "-"):
        return value
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value  # a run id standing in for a manual run's missing tick
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat()


@dataclass
class HistoryReport:
    """The executions of the history against the attempts etcd committed."""

    executions: int = 0
    committed_successes: int = 0
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # tick -> committed executions
    phantoms: list[str] = field(default_factory=list)  # a committed success no execution backs
    # executions whose own outcome etcd never committed (the leader may have recorded it lost)
    stale: list[str] = field(default_factory=list)
    # stale executions whose process ran to its end: their result was refused (fencing), not
    # merely killed with their node; the scenarios that freeze a worker expect some
    fenced: list[str] = field(default_factory=list)
    # tick -> executions, leaving out attempts the retry policy re-runs (committed as lost, or
    # failed/timed out with retries left): an unexplained second execution of a tick
    executed_twice: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.phantoms or self.executed_twice)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "executions": self.executions,
            "committed_successes": self.committed_successes,
            "duplicates": self.duplicates,
            "phantoms": self.phantoms,
            "stale": len(self.stale),
            "fenced": len(self.fenced),
            "executed_twice": self.executed_twice,
        }


def _retried_by_policy(run: dict[str, Any], att: dict[str, Any]) -> bool:
    """Did the retry policy run this attempt again? Lost attempts are the leader's verdict on a
    node that stopped holding the run; failed and timed-out ones are retried while retries are
    left (the run's snapshot says how many)."""
    if att["status"] == "lost":
        return True
    retries = int((run.get("snapshot") or {}).get("retries", 0))
    return att["status"] in ("failed", "timed_out") and int(att.get("attempt", 1)) <= retries


def check_history(runs: list[dict[str, Any]], history: list[Execution]) -> HistoryReport:
    """Merge the runs in etcd with the executions: every committed success must be backed by an
    execution that finished with the same fencing token (run id + claim revision); no tick may have
    two committed successful executions, nor two executions the retry policy does not explain;
    executions that committed nothing themselves are stale (their node lost the claim: etcd never
    took their claim, or the leader recorded the attempt as lost under the same fencing token), and
    those of them that ran to their end are fenced (their result was discarded)."""
    ends = {(e.run, e.claim_revision): e for e in history if e.phase == "end"}
    starts = [e for e in history if e.phase == "start"]
    report = HistoryReport(executions=len(starts))
    committed: set[tuple[str, int]] = set()
    retried: set[tuple[str, int]] = set()
    by_tick: dict[str, list[str]] = {}
    for run in runs:
        for att in run.get("attempts", []):
            token = (run["id"], int(att.get("claim_revision") or 0))
            if att["status"] != "lost":  # a lost attempt is the leader's verdict, not its own
                committed.add(token)
            if _retried_by_policy(run, att):
                retried.add(token)
            if att["status"] != "succeeded":
                continue
            report.committed_successes += 1
            if token not in ends:
                report.phantoms.append(f"{run['id']}@{token[1]}")
            tick = tick_key(str(run.get("scheduled_at") or "")) or run["id"]
            by_tick.setdefault(tick, []).append(f"{run['id']}@{token[1]}")
    report.duplicates = {t: ids for t, ids in by_tick.items() if len(ids) > 1}
    per_tick: dict[str, set[str]] = {}
    for e in starts:
        if e.tick != "-" and (e.run, e.claim_revision) not in retried:
            per_tick.setdefault(tick_key(e.tick), set()).add(f"{e.run}@{e.claim_revision}/{e.node}")
    report.executed_twice = {t: sorted(x) for t, x in per_tick.items() if len(x) > 1}
    stale = [e for e in starts if (e.run, e.claim_revision) not in committed]
    report.stale = sorted(f"{e.run}@{e.claim_revision}/{e.node}" for e in stale)
    report.fenced = sorted(
        f"{e.run}@{e.claim_revision}/{e.node}" for e in stale if (e.run, e.claim_revision) in ends
    )
    return report


# -- metrics ------------------------------------------------------------------------------------


class MetricMissing(AssertionError):
    """A metric the scenario relies on could not be read: never taken as 0."""


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Sum of the samples of ``name`` (with ``labels`` among theirs) in Prometheus text; None
    when there is no such sample."""
    found: float | None = None
    for m in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if labels and any(have.get(k) != v for k, v in labels.items()):
            continue
        found = (found or 0.0) + float(m.group(2))
    return found


async def read_metric(
    http: aiohttp.ClientSession,
    url: str,
    name: str,
    labels: dict[str, str] | None = None,
    *,
    default: float | None = None,
) -> float:
    """One metric from ``url``/metrics. An unreachable endpoint fails the read
    (MetricMissing); an absent metric too, unless ``default`` says what its absence means (a
    labelled counter nothing has incremented yet is absent, and that is 0 of it)."""
    try:
        async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
            if r.status != 200:
                raise MetricMissing(f"{url}/metrics answered {r.status}")
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise MetricMissing(f"{url}/metrics unreadable: {exc!r}") from exc
    value = metric_value(text, name, labels)
    if value is None:
        if default is None:
            raise MetricMissing(f"{name}{labels or ''} not in {url}/metrics")
        return default
    return value


# -- node processes -----------------------------------------------------------------------------


async def node_ready(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def leader_of(http: aiohttp.ClientSession, nodes: list[Any]) -> str | None:
    """The scheduling leader as the first live node that answers ``/status`` reports it."""
    for node in nodes:
        if not node.alive():
            continue
        try:
            async with http.get(f"{node.url}/status", timeout=aiohttp.ClientTimeout(total=2)) as r:
                body = await r.json()
                if body.get("leader"):
                    return str(body["leader"])
        except (aiohttp.ClientError, TimeoutError):
            continue
    return None


async def wait_ready(http: aiohttp.ClientSession, node: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await node_ready(http, node.url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node.node_id} not ready after {timeout}s")
        await asyncio.sleep(0.1)


async def wait_all_ready(cluster: ProcessCluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with api_session() as http:
        for node in cluster.procs:
            while not await node_ready(http, node.url):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{node.node_id} not ready after {timeout}s")
                await asyncio.sleep(0.2)


def lease_losses(cluster: ProcessCluster) -> dict[str, int]:
    """How many times each node has lost its lease so far (from its JSON log)."""
    out: dict[str, int] = {}
    for p in cluster.procs:
        with contextlib.suppress(OSError):
            out[p.node_id] = p.log_path.read_text().count('"event": "lease lost"')
    return out


async def api(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=10), **kw) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


async def api_until_ok(
    http: aiohttp.ClientSession,
    urls: list[str],
    method: str,
    path: str,
    timeout: float = 60,
    **kw: Any,
) -> Any:
    """Call ``path`` on any of ``urls`` until one answers 2xx (a node that is still reconnecting
    to etcd answers 503 meanwhile); the body of the first success."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for url in urls:
            try:
                status, body = await api(http, method, f"{url}{path}", **kw)
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = exc
                continue
            if 200 <= status < 300:
                return body
            last = (status, body)
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{method} {path}: no success within {timeout}s; last: {last!r}")


@contextlib.contextmanager
def scratch(prefix: str = "cronmesh-chaos-") -> Iterator[Path]:
    """A directory for a command-line run; kept afterwards (logs, history, summary)."""
    yield Path(tempfile.mkdtemp(prefix=prefix))


def key_prefix() -> str:
    return f"/chaos{uuid.uuid4().hex[:6]}"


# -- summary ------------------------------------------------------------------------------------

COLUMNS = ("scenario", "faults", "ticks_due", "runs", "duplicates", "misses", "lost", "max_gap_s")


def summary_row(scenario: str, faults: int, report: Any | None, extra: int = 0) -> dict[str, Any]:
    """One row of the summary table from a checker ``Report`` (None: no tick window)."""
    if report is None:
        return dict(zip(COLUMNS, (scenario, faults, 0, extra, 0, 0, 0, 0.0), strict=True))
    return {
        "scenario": scenario,
        "faults": faults,
        "ticks_due": report.ticks,
        "runs": report.runs,
        "duplicates": len(report.duplicates),
        "misses": len(report.missed),
        "lost": len(report.lost_final),
        "max_gap_s": round(report.largest_gap, 2),
    }


def print_summary(rows: list[dict[str, Any]], out: Path | None = None) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS) for r in rows]
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.write_text(json.dumps(rows, indent=2))
    return text
