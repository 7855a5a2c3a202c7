"""Lag at a steady rate, cronmesh beside APScheduler's memory store in the same run:
``python -m bench.lagside [--rounds 2] [--window 30] [--jobs 100] [--capacity N]
[--linger 0,0.02] [--keep DIR]``.

Each round runs the lag scenario of ``bench.run`` (one fresh ``cronmesh node`` with DEFAULT
settings unless ``--capacity`` is given, its own etcd) and then the same workload on APScheduler
3 with its memory store (``bench.peers``: each job notes its start, then runs ``sh -c true``),
one after the other on the same machine, and prints lag p50 / p99 of both with the load average
before each. Rounds alternate the order, so neither side always gets the quieter minute.
Writes ``bench/results/lagside.json``.

``--linger`` sets the worker's completion linger (D353) of the cronmesh node, one value per round
in turn (``0,0.02``: rounds alternate); ``--keep DIR`` keeps each round's folder (etcd data, the
node's log) in DIR. Each cronmesh round reports the node log's warnings and errors by event
(``lease lost``, ``event loop stalled; lease not refreshed``, ...) and the missed ticks per second
of the window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import Procs, auth_headers, bench_etcd, code_version, machine_info
from bench.peers import runner
from bench.peers.env import peers_python
from bench.scenarios import Context, Mode, steady_lag_at

RESULTS = Path(__file__).resolve().parent / "results"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def log_events(folder: Path, t0: float) -> dict[str, Any]:
    """The node logs' warnings and errors in ``folder``: a count by event, and the first few
    with their time relative to the window's start ``t0``."""
    counts: Counter[str] = Counter()
    first: list[str] = []
    for path in sorted(folder.glob("*.log")):
        with path.open(errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(rec, dict) or rec.get("level") not in ("warning", "error"):
                    continue
                event = str(rec.get("event"))[:80]
                counts[event] += 1
                if len(first) < 20:
                    at = rec.get("timestamp")
                    try:
                        rel = datetime.fromisoformat(str(at)).timestamp() - t0
                        first.append(f"{rel:+.2f}s {event} {rec.get('stalled_s', '')}".strip())
                    except ValueError:
                        first.append(event)
    return {"counts": dict(counts), "first": first}


async def cronmesh_round(
    args: argparse.Namespace, procs: Procs, tmp: Path, linger: str | None
) -> dict[str, Any]:
    mode = Mode(quick=False, lag_jobs=args.jobs, lag_capacity=args.capacity, window=args.window)
    folder = tmp / f"cronmesh-{time.monotonic_ns()}"
    folder.mkdir()
    if linger is None:
        os.environ.pop("BENCH_COMPLETION_LINGER", None)
    else:
        os.environ["BENCH_COMPLETION_LINGER"] = linger
    async with bench_etcd(folder, procs) as (etcd_server, etcd):
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60), headers=auth_headers()
        ) as http:
            ctx = Context(etcd_server, etcd, http, folder, procs, mode)
            docs = await steady_lag_at(ctx, args.jobs)
    doc = docs[f"lag_{args.jobs}"]
    doc["folder"] = str(folder)
    doc["log"] = log_events(folder, doc["window_t0"])
    return doc


def apscheduler_round(args: argparse.Namespace, procs: Procs, tmp: Path) -> dict[str, Any]:
    peer = runner.APSchedulerPeer(peers_python(), tmp, procs, "memory")
    mode = runner.Mode(quick=False)
    return runner.periodic_level(peer, mode, args.jobs, args.window, print)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.lagside", description=__doc__)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--window", type=int, default=30, help="seconds measured per side and round")
    ap.add_argument("--jobs", type=int, default=100, help="jobs every second (= runs/s)")
    ap.add_argument("--capacity", type=int, help="the node's capacity (default: not set)")
    ap.add_argument("--sides", default="cronmesh,apscheduler", help="which sides to run")
    ap.add_argument(
        "--linger",
        help="the node's completion linger in s (D353), comma-separated: one per round in turn",
    )
    ap.add_argument("--keep", type=Path, help="keep the rounds' folders (node logs) in this folder")
    args = ap.parse_args(argv)
    lingers = args.linger.split(",") if args.linger else [None]
    for value in lingers:
        try:
            ok = value is None or 0 <= float(value) <= 1
        except ValueError:
            ok = False
        if not ok:
            ap.error(f"--linger: {value!r} is not a number of seconds between 0 and 1")
    procs = Procs()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="lagside-", dir=args.keep))
    else:
        tmp = Path(tempfile.mkdtemp(prefix="cronmesh-lagside-"))
    rounds: list[dict[str, Any]] = []
    try:
        for i in range(args.rounds):
            sides = ["cronmesh", "apscheduler"] if i % 2 == 0 else ["apscheduler", "cronmesh"]
            sides = [s for s in sides if s in args.sides.split(",")]
            row: dict[str, Any] = {}
            for side in sides:
                before = load()
                linger = lingers[i % len(lingers)]
                if side == "cronmesh":
                    doc = asyncio.run(cronmesh_round(args, procs, tmp, linger))
                else:
                    doc = apscheduler_round(args, procs, tmp)
                lag, missed, dup = doc["start_lag"], doc["missed_ticks"], doc["duplicate_ticks"]
                row[side] = {
                    "load_average_before": before,
                    "load_average_after": load(),
                    "p50_ms": lag.get("p50_ms"),
                    "p99_ms": lag.get("p99_ms"),
                    "max_ms": lag.get("max_ms"),
                    "runs": lag.get("count"),
                    "missed": missed,
                    "duplicates": dup,
                    "detail": {
                        "linger": linger,
                        "expected_ticks": doc.get("expected_ticks"),
                        "runs_for_window_ticks": doc.get("runs_for_window_ticks"),
                        "statuses": doc.get("statuses"),
                        "missed_ticks_metric": doc.get("missed_ticks_metric"),
                        "settle_s": doc.get("settle_s"),
                        "missed_per_s": doc.get("missed_per_s"),
                        "log": doc.get("log"),
                        "folder": doc.get("folder"),
                    }
                    | {
                        k: doc.get(k)
                        for k in (
                            "fire_lag",
                            "create_to_claim",
                            "started_per_s",
                            "claims",
                            "cpu",
                            "start_lag_ms_sample",
                            "worst_ticks",
                        )
                    },
                }
                brief = {k: v for k, v in row[side].items() if k != "detail"}
                if side == "cronmesh":
                    d = row[side]["detail"]
                    brief |= {
                        k: d[k]
                        for k in (
                            "linger",
                            "runs_for_window_ticks",
                            "statuses",
                            "missed_per_s",
                            "settle_s",
                        )
                    }
                    brief["log"] = d["log"]["counts"] if d["log"] else None
                print(f"round {i + 1} {side}: {brief}", flush=True)
            rounds.append(row)
    finally:
        procs.stop_all()
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    settings = "default settings" if args.capacity is None else f"--capacity {args.capacity}"
    print(f"\nlag at {args.jobs} runs/s, {args.window} s per side, cronmesh node: {settings}")
    print(
        "| round | cronmesh p50 / p99 ms (load) | APScheduler memory p50 / p99 ms (load) "
        "| p99 ratio |"
    )
    print("|---|---|---|---|")
    for i, row in enumerate(rounds):
        if len(row) < 2:
            continue
        c, a = row["cronmesh"], row["apscheduler"]
        ratio = round(c["p99_ms"] / a["p99_ms"], 2) if c["p99_ms"] and a["p99_ms"] else None
        print(
            f"| {i + 1} | {c['p50_ms']} / {c['p99_ms']} ({c['load_average_before'][0]}) "
            f"| {a['p50_ms']} / {a['p99_ms']} ({a['load_average_before'][0]}) | {ratio} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info("n/a"),
        "code": code_version(),
        "jobs": args.jobs,
        "window_s": args.window,
        "cronmesh_settings": settings,
        "rounds": rounds,
    }
    (RESULTS / "lagside.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
