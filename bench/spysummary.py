"""Where a node's threads spend their time, from ``bench.e2eprobe --spy`` samples.

    python -m bench.spysummary bench/results/e2eprobe-this-600.spy --runs 4326 [--window 10]

py-spy samples every thread at 100 Hz without stopping the node (``--nonblocking``), so unlike
cProfile it does not slow the loop down: what it shows is the saturated node as it runs. A
sample is a thread that was not idle: running, or waiting for the GIL (py-spy cannot tell the
two apart without ``--gil``), so the shares are of the loop's *wall* time while it had work, not
of its CPU. The event-loop thread's samples are put in areas by the first rule (in the order of
``AREAS``) that one of the stack's frames matches; ``--runs`` (the window's finished runs) turns
samples into milliseconds per run. The other threads are counted by name (``cgroup-io``: the
spawns and clean-ups, D341).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# (area, substrings of a frame); the first area with a match anywhere in the stack wins
AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("logging (structlog)", ("structlog/",)),
    ("metrics scrape, API", ("Api.", "aiohttp/web", "exposition")),
    (
        "leader: creation (plan, build, own claims, txn)",
        (
            "Scheduler._tick_loop",
            "Scheduler._fire",
            "TickWrites",
            "leader/ownruns.py",
            "OwnClaims.create_ops",
            "OwnClaims.reserve",
        ),
    ),
    ("leader: lost-run read-back", ("Reaper.",)),
    ("own claims won, ended", ("OwnClaims.",)),
    ("completion (finish_ops, group commit)", ("Executing._complete", "TxnBatcher", "finish_ops")),
    (
        "reaping (supervise, leftovers, output)",
        ("Process._supervise", "Process._reap", "OutputPipe", "Process._on_pidfd", "_close_pidfd"),
    ),
    ("clean-up hand-off", ("finish (nodes/executor/launch.py",)),
    (
        "spawn, seat, release",
        (
            "Executing._launch",
            "start (nodes/executor/launch.py",
            "Seating.",
            "Capacity.",
            "Process.release",
            "JobCommand._command",
            "Releases.",
            "Logs.open",
            "Process.__init__",
        ),
    ),
    ("dispatch, claim", ("Worker._dispatch", "Claiming.", "Worker._on_queue", "Worker._run_of")),
    (
        "watch events, decoding",
        ("cluster/watch.py", "Etcd.watch", "_Stream.dispatch", "Notifier.", "JobCache", "feed.py"),
    ),
    ("etcd calls (other)", ("grpc/", "cluster/etcd/")),
    ("execute (other)", ("Executing._execute", "Executing._run")),
]


def read(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw format: ``thread (tid): name;frame;frame... count`` per line."""
    rows = []
    for line in path.read_text().splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if stack:
            rows.append((stack.split(";"), int(n)))
    return rows


def area(stack: list[str]) -> str:
    joined = ";".join(stack)
    for name, patterns in AREAS:
        if any(p in joined for p in patterns):
            return name
    return "event loop, other"


def summary(rows: list[tuple[list[str], int]], runs: int, window: float) -> list[str]:
    threads: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for stack, n in rows:
        name = stack[0].split(": ", 1)[-1]
        threads["cgroup-io" if name.startswith("cgroup-io") else name] += n
        if name == "MainThread":
            areas[area(stack)] += n
    loop = threads["MainThread"]
    per = 10.0 / max(runs, 1)  # one sample = 10 ms
    out = [
        f"loop thread not idle {loop / 100 / window:.2f} of the window; "
        f"{loop * per:.3f} ms per finished run",
        *(f"  {100 * n / loop:5.1f}%  {n * per:.3f} ms/run  {k}" for k, n in areas.most_common()),
        "threads (samples / 100 / window: threads not idle on average): "
        + ", ".join(f"{k} {n / 100 / window:.2f}" for k, n in threads.most_common()),
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.spysummary", description=__doc__)
    ap.add_argument("path", type=Path)
    ap.add_argument("--runs", type=int, required=True, help="runs finished in the window")
    ap.add_argument("--window", type=float, default=10.0)
    args = ap.parse_args(argv)
    print("\n".join(summary(read(args.path), args.runs, args.window)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
