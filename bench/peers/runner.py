"""Runs the peers' scenarios: the processes of each peer (started in the peers' virtualenv, on
loopback, each in a session of its own), the windows aligned on whole seconds, CPU time of every
process of the peer from ``/proc``, and the start records its tasks wrote.

Scenarios, the same for every peer and matching cronmesh's (``bench.scenarios``):

* ``lag_100``: 100 jobs due every whole second; lag, misses, duplicates and CPU per run over a
  window that starts after a warm-up.
* ``throughput``: N jobs every second for a few levels of N; a level is sustained when ≥ 95 % of
  the offered runs start in the window.
* ``burst_1000``: 1,000 jobs all due at the same instant; when did they start, did all start.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import Procs, proc_cpu
from bench.peers import measure
from bench.peers.env import redis_server
from nodes.devtools.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
EDGE = 0.2  # CPU snapshots are taken this long before a tick, when the peer is idle


@dataclass(frozen=True)
class Mode:
    quick: bool

    @property
    def warmup(self) -> float:
        return 3.0 if self.quick else 5.0

    @property
    def lag_window(self) -> int:
        return 15 if self.quick else 60

    @property
    def levels(self) -> tuple[int, ...]:
        return (200, 500) if self.quick else (200, 400, 800)

    @property
    def level_window(self) -> int:
        return 8 if self.quick else 15

    @property
    def dag_sizes(self) -> tuple[int, int]:
        """(chain, fan-out): every task of a SequentialExecutor is a new process (~2 s)."""
        return (10, 20) if self.quick else (50, 200)

    burst_jobs: int = 1000
    burst_wait: float = 30.0  # how long after the due instant a burst may take


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- processes -----------------------------------------------------------------------------------


class PeerProc:
    """One process of a peer, in its own session; stopped with its whole process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            env=env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left of the group (Celery's pool processes, a stuck child)
        self._signal_group(signal.SIGKILL)
        if self.alive():
            self.proc.wait()
        if not self._out.closed:
            self._out.close()

    def __repr__(self) -> str:
        return f"{self.name}(pid {self.proc.pid})"


def descendants(roots: list[int]) -> set[int]:
    """``roots`` and every live process below them."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            data = (entry / "stat").read_bytes()
        except OSError:
            continue
        ppid = int(data[data.rfind(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


def tree_cpu(roots: list[int]) -> float:
    """User + system seconds of ``roots`` and their live descendants, each counted for itself:
    the CPU of the reaped ``sh -c true`` processes is left out, as it is for cronmesh."""
    total = 0.0
    for pid in descendants(roots):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += proc_cpu(pid).self_s
    return total


def read_starts(out: Path) -> list[measure.Start]:
    starts: list[measure.Start] = []
    for path in sorted(out.glob("starts-*.txt")):
        for line in path.read_text().splitlines():
            name, _, ts = line.partition(" ")
            with contextlib.suppress(ValueError):
                starts.append((name, float(ts)))
    return starts


def count_starts(out: Path, name: str | None = None) -> int:
    total = 0
    for path in out.glob("starts-*.txt"):
        with contextlib.suppress(OSError):
            text = path.read_text()
            total += (
                text.count("\n")
                if name is None
                else sum(1 for line in text.splitlines() if line.startswith(name + " "))
            )
    return total


def wait_for(cond: Callable[[], bool], within: float, what: str, procs: list[PeerProc]) -> None:
    deadline = time.monotonic() + within
    while not cond():
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p!r} exited with {p.proc.returncode}; see {p.log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {within:.0f} s")
        time.sleep(0.1)


def sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        time.sleep(delay)


def jobs(n: int) -> list[str]:
    return [f"j{i:05d}" for i in range(n)]


# -- peers ---------------------------------------------------------------------------------------


class Peer(ABC):
    name: str
    runs: str  # what one run of this peer is, for the report

    def __init__(self, python: Path, tmp: Path, procs: Procs) -> None:
        self.python = python
        self.tmp = tmp
        self.procs = procs

    @staticmethod
    def env_for(out: Path, **extra: str) -> dict[str, str]:
        """The environment of a peer's process: this repository importable, records to ``out``."""
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", PEERS_OUT=str(out))
        env.pop("VIRTUAL_ENV", None)
        env.update(extra)
        return env

    def env(self, out: Path, **extra: str) -> dict[str, str]:
        return self.env_for(out, **extra)

    def spawn(self, name: str, argv: list[str], env: dict[str, str], out: Path) -> PeerProc:
        p = PeerProc(name, argv, env, out / f"{name}.log")
        self.procs.add(p)
        return p

    def stop(self, started: list[PeerProc]) -> None:
        for p in reversed(started):
            p.stop()
            self.procs.remove(p)

    @abstractmethod
    def start(self, out: Path, n: int, at: float | None) -> list[PeerProc]:
        """Start the peer with ``n`` jobs, every second (``at`` None) or all once at ``at``;
        return when it can take work."""

    @abstractmethod
    def ready_for_burst(self, out: Path, started: list[PeerProc]) -> bool: ...


class CeleryPeer(Peer):
    name = "celery"
    runs = (
        "beat (one entry per job, a schedule due once per whole second, or once at the due "
        "instant) sends `peers.run_true` through Redis; a prefork worker (-c 4) runs it: note "
        "the start, then subprocess.run(['sh', '-c', 'true'])"
    )
    concurrency = 4

    def start(self, out: Path, n: int, at: float | None) -> list[PeerProc]:
        port = free_port()
        started: list[PeerProc] = []
        try:
            started.append(
                self.spawn(
                    "redis",
                    [
                        redis_server(),
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--save", "",
                        "--appendonly", "no",
                        "--dir", str(out),
                    ],
                    self.env(out),
                    out,
                )
            )  # fmt: skip
            wait_for(lambda: _accepts(port), 30, "redis accepting connections", started)
            env = self.env(
                out,
                PEERS_BROKER=f"redis://127.0.0.1:{port}/0",
                PEERS_JOBS=str(n),
                PEERS_KIND="every_second" if at is None else "once",
                PEERS_AT=str(at or 0),
            )
            celery = [str(self.python), "-m", "celery", "-A", "bench.peers.celery_app"]
            worker = [
                "worker", "-l", "WARNING", "-P", "prefork", "-c", str(self.concurrency),
                "--without-mingle", "--without-gossip", "--without-heartbeat",
                "-n", f"peers@{socket.gethostname()}",
            ]  # fmt: skip
            started.append(self.spawn("celery-worker", celery + worker, env, out))
            beat = ["beat", "-l", "WARNING", "-s", str(out / "beat-schedule")]
            started.append(self.spawn("celery-beat", celery + beat, env, out))
            return started
        except BaseException:
            self.stop(started)
            raise

    def ready_for_burst(self, out: Path, started: list[PeerProc]) -> bool:
        return count_starts(out, "ping") > 0


class APSchedulerPeer(Peer):
    def __init__(self, python: Path, tmp: Path, procs: Procs, store: str) -> None:
        super().__init__(python, tmp, procs)
        self.store = store
        self.name = f"apscheduler-{store}"
        self.runs = (
            f"one process: BackgroundScheduler, {store} job store, thread pool of 64; a job per "
            "tick (CronTrigger(second='*') or DateTrigger) calls bench.peers.task:run_true: note "
            "the start, then subprocess.run(['sh', '-c', 'true'])"
        )

    def start(self, out: Path, n: int, at: float | None) -> list[PeerProc]:
        argv = [
            str(self.python), "-m", "bench.peers.apsched_run",
            "--store", self.store, "--sqlite", str(out / "jobs.sqlite"), "--jobs", str(n),
        ]  # fmt: skip
        argv += ["--every-second"] if at is None else ["--at", repr(at)]
        p = self.spawn(self.name, argv, self.env(out), out)
        try:
            wait_for(lambda: b"ready" in p.log.read_bytes(), 120, f"{self.name} ready", [p])
        except BaseException:
            self.stop([p])
            raise
        return [p]

    def ready_for_burst(self, out: Path, started: list[PeerProc]) -> bool:
        return all(b"ready" in p.log.read_bytes() for p in started)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- scenarios -----------------------------------------------------------------------------------


def _out(peer: Peer, label: str) -> Path:
    out = peer.tmp / peer.name / label
    out.mkdir(parents=True, exist_ok=True)
    return out


def periodic_level(
    peer: Peer, mode: Mode, n: int, window: int, say: Callable[[str], None]
) -> dict[str, Any]:
    out = _out(peer, f"every-second-{n}")
    say(f"{peer.name}: {n} jobs every second for {window} s (load {load_average()})")
    load_before = load_average()
    started = peer.start(out, n, None)
    pids = [p.pid for p in started]
    try:
        wait_for(lambda: count_starts(out) > 0, 120, f"{peer.name}: a first run", started)
        time.sleep(mode.warmup)
        t0 = math.ceil(time.time()) + 1
        t1 = t0 + window
        sleep_until(t0 - EDGE)
        cpu0 = tree_cpu(pids)
        sleep_until(t1 - EDGE)
        cpu1 = tree_cpu(pids)
        sleep_until(t1 + 2.0)
    finally:
        peer.stop(started)
    stats = measure.periodic(read_starts(out), jobs(n), t0, t1)
    cpu_s = cpu1 - cpu0
    stats.update(
        jobs=n,
        cpu={
            "seconds": round(cpu_s, 3),
            "ms_per_run": round(cpu_s / stats["runs"] * 1000, 3) if stats["runs"] else None,
            "processes": [repr(p) for p in started],
        },
        load_average_before=load_before,
        load_average_after=load_average(),
    )
    return stats


def lag_100(peer: Peer, mode: Mode, say: Callable[[str], None]) -> dict[str, Any]:
    return periodic_level(peer, mode, 100, mode.lag_window, say)


def throughput(peer: Peer, mode: Mode, say: Callable[[str], None]) -> dict[str, Any]:
    levels = []
    for n in mode.levels:
        lv = periodic_level(peer, mode, n, mode.level_window, say)
        lv["sustained"] = measure.sustained(lv, n)
        levels.append(lv)
        if not lv["sustained"]:
            break  # a higher level only costs time
    return {**measure.best_sustained(levels), "levels": levels}


def burst_1000(peer: Peer, mode: Mode, say: Callable[[str], None]) -> dict[str, Any]:
    n = mode.burst_jobs
    out = _out(peer, f"burst-{n}")
    load_before = load_average()
    due = float(math.ceil(time.time()) + 15)
    say(f"{peer.name}: {n} jobs due at the same instant (load {load_before})")
    started = peer.start(out, n, due)
    pids = [p.pid for p in started]
    try:
        wait_for(lambda: peer.ready_for_burst(out, started), 60, f"{peer.name} ready", started)
        if time.time() > due - 1.0:
            raise RuntimeError(f"{peer.name} was not ready 1 s before the due instant")
        sleep_until(due - 0.5)
        cpu0 = tree_cpu(pids)
        with contextlib.suppress(TimeoutError):
            wait_for(
                _burst_over(out, set(jobs(n)), due), due + mode.burst_wait - time.time(),
                "every burst job started", started,
            )  # fmt: skip
        cpu1 = tree_cpu(pids)
        time.sleep(1.0)  # duplicates, if any, show up a little later
    finally:
        peer.stop(started)
    stats = measure.burst(read_starts(out), jobs(n), due)
    stats.update(
        waited_s=mode.burst_wait,
        cpu={"seconds": round(cpu1 - cpu0, 3), "ms_per_run": round((cpu1 - cpu0) / n * 1000, 3)},
        load_average_before=load_before,
        load_average_after=load_average(),
    )
    return stats


def _burst_over(out: Path, names: set[str], due: float, quiet: float = 5.0) -> Callable[[], bool]:
    """True once every job started, or when nothing new started for ``quiet`` seconds after the
    due instant (APScheduler drops runs later than its misfire grace time: they never come)."""
    last = {"count": -1, "since": time.monotonic()}

    def over() -> bool:
        started = sum(1 for name, _ in read_starts(out) if name in names)
        if started >= len(names):
            return True
        if started != last["count"]:
            last["count"], last["since"] = started, time.monotonic()
        return time.time() > due and time.monotonic() - last["since"] > quiet

    return over


SCENARIOS: tuple[tuple[str, Callable[[Peer, Mode, Callable[[str], None]], dict[str, Any]]], ...] = (
    ("lag_100", lag_100),
    ("throughput", throughput),
    ("burst_1000", burst_1000),
)


def run_peer(peer: Peer, mode: Mode, say: Callable[[str], None]) -> dict[str, Any]:
    doc: dict[str, Any] = {"peer": peer.name, "runs": peer.runs}
    for name, fn in SCENARIOS:
        try:
            doc[name] = fn(peer, mode, say)
        except (RuntimeError, TimeoutError) as exc:
            say(f"{peer.name}: {name} failed: {exc}")
            doc[name] = {"error": str(exc)}
    return doc
