"""Does a spawn in a thread stall the event loop? ``python -m bench.gilspawn``.

An asyncio loop spins (``await asyncio.sleep(0)``, a saturated node's loop: always something
to do) and records every gap between two of its iterations longer than ``GAP_S``: a time it
could not run. Meanwhile ``--threads`` threads (the node's ``cgroup-io`` pool) spawn the node's
kind of process, paced to ``--rate`` spawns per second in all (0: as fast as they can): the
armed shim (``nodes.executor.arming.armed_argv``) of ``/bin/true`` with stdin, stdout and stderr
on pipes, in a new session, then released by closing its stdin (it exits 125), its pipes
closed and reaped. Ways (``--ways``):

- ``popen``: ``subprocess.Popen`` as ``nodes/executor/launch.py`` does (``close_fds``, a new
  session, ``cwd``, ``umask``, ``env``): ``vfork`` + ``exec`` in ``_posixsubprocess.fork_exec``;
- ``popen_nofds``: the same with ``close_fds=False`` (the child closes nothing);
- ``child``: what the node does since D495 (``nodes.executor.child.spawn``): the same ``Popen``
  given pipes the caller made, so it wraps none of them in a file object;
- ``posix_spawn``: ``os.posix_spawn`` with ``setsid=True`` and the pipes as file actions; it
  has no ``cwd`` nor ``umask`` in 3.11, so the shim does them (``cd``; ``umask``);
- ``none``: no spawn at all: the loop's own gaps on this machine, the baseline.

Per spawn: ``wall_us`` (the spawn call as the thread sees it: pipes, Popen's Python, the
syscalls), ``call_us`` (the C call alone: ``fork_exec`` or ``posix_spawn``), ``held_frac`` (of
the C call's time, the share the loop was stalled in: ~1 when the call keeps the GIL, ~0 when it
lets it go; on a loaded machine the loop's own wake-up after the GIL came free adds to it),
``loop_ran_frac`` (the share of C calls during which the loop ran at all: ~0 for a call that
keeps the GIL, however loaded the machine), ``stall_call_us`` and ``stall_spawn_us`` (the loop's
stalled time inside the union of the C calls, and of the whole spawn calls, per spawn),
``cpu_us`` (the spawning thread's CPU per spawn, spawn and reap). Per window: the loop's stalled
time per second and its longest gap. ``--fds`` opens that many extra descriptors first (a node's
sockets and pidfds), ``--rss-mib`` makes the process as large as a busy node, ``--env-kib`` pads
the job's environment (a slower ``exec``: the kernel copies it, so a call that keeps the GIL
shows it plainly). ``--rounds`` alternates the ways.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from nodes.executor.arming import armed_argv
from nodes.executor.child import spawn as node_spawn

GAP_S = 50e-6
"""A loop iteration takes ~10-20 µs here; a longer gap is a time the loop could not run."""

RAN = 0.9
"""A C call during which the loop stood still less than this share of it: the loop ran inside
it, so the call let the GIL go (one that keeps it covers itself with one gap, whatever the load)."""

ENV = {"PATH": "/usr/bin:/bin"}
CWD = "/tmp"
UMASK = 0o022
Interval = tuple[float, float]


def overlaps(gaps: Sequence[Interval], spans: Sequence[Interval]) -> list[float]:
    """For each span, how long the gaps cover of it. ``gaps`` sorted and disjoint (the loop
    records them in order); ``spans`` in any order, possibly overlapping one another."""
    ends = [e for _s, e in gaps]
    out = []
    for a, b in spans:
        total = 0.0
        i = bisect.bisect_right(ends, a)  # the first gap ending after a
        while i < len(gaps) and gaps[i][0] < b:
            total += max(0.0, min(b, gaps[i][1]) - max(a, gaps[i][0]))
            i += 1
        out.append(total)
    return out


def union(spans: Sequence[Interval]) -> list[Interval]:
    """The spans merged into sorted disjoint intervals."""
    out: list[Interval] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def covered(gaps: Sequence[Interval], spans: Sequence[Interval]) -> float:
    """How long the gaps cover of the union of the spans (each instant counted once)."""
    return sum(overlaps(gaps, union(spans)))


def summarize(
    gaps: Sequence[Interval],
    calls: Sequence[Interval],
    spawns: Sequence[Interval],
    cpu_s: float,
    seconds: float,
) -> dict[str, Any]:
    """One window's numbers (see the module's docstring); times in µs unless named."""
    n = len(spawns)
    stalled = sum(e - s for s, e in gaps)
    out: dict[str, Any] = {
        "spawns_per_s": round(n / seconds, 1),
        "loop_stall_ms_per_s": round(stalled / seconds * 1e3, 2),
        "loop_max_gap_ms": round(max((e - s for s, e in gaps), default=0.0) * 1e3, 2),
    }
    if not n:
        return out
    call_time = sum(e - s for s, e in calls)
    held = overlaps(gaps, calls)
    ran = sum(1 for (s, e), h in zip(calls, held, strict=True) if h < RAN * (e - s))
    out |= {
        "wall_us": round(sum(e - s for s, e in spawns) / n * 1e6, 1),
        "call_us": round(call_time / n * 1e6, 1),
        "held_frac": round(sum(held) / call_time, 3) if call_time else None,
        "loop_ran_frac": round(ran / len(calls), 3) if calls else None,
        "stall_call_us": round(covered(gaps, calls) / n * 1e6, 1),
        "stall_spawn_us": round(covered(gaps, spawns) / n * 1e6, 1),
        "cpu_us": round(cpu_s / n * 1e6, 1),
    }
    return out


def extra_stall_us(row: dict[str, Any], base: dict[str, Any] | None) -> float | None:
    """The loop's stalled time per spawn beyond the no-spawn baseline of the same round (the
    machine's own preemptions taken out): what a spawn costs the loop."""
    if base is None or not row.get("spawns_per_s"):
        return None
    extra = float(row["loop_stall_ms_per_s"]) - float(base["loop_stall_ms_per_s"])
    return round(extra / float(row["spawns_per_s"]) * 1e3, 1)


class _Recorder:
    """The C call's span, per thread: ``fork_exec`` (for Popen) and ``posix_spawn`` wrapped."""

    def __init__(self) -> None:
        self.calls: list[Interval] = []
        self._lock = threading.Lock()

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                t1 = time.perf_counter()
                with self._lock:
                    self.calls.append((t0, t1))

        return timed


ARGV = armed_argv(["/bin/true"])
# posix_spawn has neither cwd nor umask (3.11): the shim does them before it holds.
SPAWN_ARGV = [*ARGV[:2], f"cd {CWD} || exit 126; umask {UMASK:o}; {ARGV[2]}", *ARGV[3:]]


def _popen(close_fds: bool, env: dict[str, str]) -> Callable[[], None]:
    def spawn_reap() -> None:
        p = subprocess.Popen(
            ARGV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=close_fds,
            env=env,
            cwd=CWD,
            umask=UMASK,
        )
        _mark_spawned()
        for f in (p.stdin, p.stdout, p.stderr):
            assert f is not None
            f.close()  # stdin's end of file: the armed shim exits 125
        p.wait()

    return spawn_reap


def _child(env: dict[str, str]) -> Callable[[], None]:
    def spawn_reap() -> None:
        child = node_spawn(ARGV, env=env, cwd=CWD, umask=UMASK, held=True)
        _mark_spawned()
        child.close()  # stdin's end of file: the armed shim exits 125
        child.popen.wait()

    return spawn_reap


def _posix_spawn(spawn: Callable[..., int], env: dict[str, str]) -> Callable[[], None]:
    def spawn_reap() -> None:
        fds = [os.pipe() for _ in range(3)]
        actions = [
            (os.POSIX_SPAWN_DUP2, fds[0][0], 0),
            (os.POSIX_SPAWN_DUP2, fds[1][1], 1),
            (os.POSIX_SPAWN_DUP2, fds[2][1], 2),
        ]
        pid = spawn(SPAWN_ARGV[0], SPAWN_ARGV, env, file_actions=actions, setsid=True)
        for fd in (fds[0][0], fds[1][1], fds[2][1]):
            os.close(fd)  # the child's ends, as Popen closes them
        _mark_spawned()
        for fd in (fds[0][1], fds[1][0], fds[2][0]):
            os.close(fd)
        os.waitpid(pid, 0)

    return spawn_reap


_local = threading.local()


def _mark_spawned() -> None:
    _local.spawned = time.perf_counter()


def _spawner(
    spawn_reap: Callable[[], None], period: float, stop: threading.Event, out: dict[str, Any]
) -> None:
    spans: list[Interval] = []
    cpu = 0.0
    next_at = time.perf_counter()
    while not stop.is_set():
        if period:
            next_at += period
            delay = next_at - time.perf_counter()
            if delay > 0:
                stop.wait(delay)
        c0, t0 = time.thread_time(), time.perf_counter()
        spawn_reap()
        cpu += time.thread_time() - c0
        spans.append((t0, _local.spawned))
    out["spans"] = spans
    out["cpu"] = cpu


async def _probe(seconds: float, started: threading.Event) -> list[Interval]:
    gaps: list[Interval] = []
    started.set()
    last = t0 = time.perf_counter()
    while last - t0 < seconds:
        await asyncio.sleep(0)
        now = time.perf_counter()
        if now - last > GAP_S:
            gaps.append((last, now))
        last = now
    return gaps


def window(
    way: str, threads: int, rate: float, seconds: float, env: dict[str, str]
) -> dict[str, Any]:
    rec = _Recorder()
    fork_exec = subprocess._fork_exec  # type: ignore[attr-defined]  # Popen's C call
    if way == "none":
        spawn_reap = None
    elif way.startswith("popen"):
        spawn_reap = _popen(way == "popen", env)
    elif way == "child":
        spawn_reap = _child(env)
    elif way == "posix_spawn":
        spawn_reap = _posix_spawn(rec.wrap(os.posix_spawn), env)
    else:
        raise SystemExit(f"unknown way {way!r}")
    stop, started = threading.Event(), threading.Event()
    results: list[dict[str, Any]] = [{} for _ in range(threads if spawn_reap else 0)]
    workers = [
        threading.Thread(
            target=_spawner, args=(spawn_reap, threads / rate if rate else 0.0, stop, r)
        )
        for r in results
    ]
    load = os.getloadavg()[0]
    subprocess._fork_exec = rec.wrap(fork_exec)  # type: ignore[attr-defined]  # this window
    try:
        for w in workers:
            w.start()
        gaps = asyncio.run(_probe(seconds, started))
        stop.set()
        for w in workers:
            w.join()
    finally:
        subprocess._fork_exec = fork_exec  # type: ignore[attr-defined]
    spans = [s for r in results for s in r["spans"]]
    cpu = sum(r["cpu"] for r in results)
    return {"way": way, "load": load, **summarize(gaps, rec.calls, spans, cpu, seconds)}


def _order(ways: list[str], r: int) -> list[str]:
    return ways if r % 2 == 0 else ways[::-1]  # main, new, new, main: the drift spread


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ways", default="none,popen,popen_nofds,posix_spawn")
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--rate", type=float, default=600.0, help="spawns per second, 0: no pacing")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fds", type=int, default=200)
    p.add_argument("--rss-mib", type=int, default=150)
    p.add_argument("--env-kib", type=int, default=0)
    args = p.parse_args()
    pad = {f"PAD{i}": "x" * 1023 for i in range(args.env_kib)}  # one string: at most 128 KiB
    env = {**ENV, **pad}
    ballast = bytearray(args.rss_mib << 20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched: page tables as a busy node's
    extra = [os.open("/dev/null", os.O_RDONLY) for _ in range(args.fds)]
    ways = args.ways.split(",")
    try:
        for r in range(args.rounds):
            rows = [window(w, args.threads, args.rate, args.seconds, env) for w in _order(ways, r)]
            base = next((row for row in rows if row["way"] == "none"), None)
            for row in rows:
                row["extra_stall_us"] = extra_stall_us(row, base)
                print(json.dumps({"round": r, **row}), flush=True)
    finally:
        for fd in extra:
            os.close(fd)


if __name__ == "__main__":
    main()
