"""Time from election to leading: ``python -m bench.leadtime [--jobs 100,1000] [--rounds 2]
[--tree NAME=PATH ...] [--burn N] [--shards K]``.

For each round, size and tree (trees alternate within a round, their order swapped every round,
so an A/B comparison is taken in the same minutes): a fresh etcd holding that many jobs (daily at
03:00, written straight into etcd as ``bench.large`` does), a probe job due every second and
``--history`` run-history charges (what kept runs leave: a new leader reads them all), then

- **fresh**: one ``cronmesh node`` (default settings) started alone — a node restarted: a new
  process that wins the election at once;
- **failover**: a second node started beside it, then the first stopped (SIGTERM: it resigns);
  the second, warm, wins.

For each leader, from its JSON log and etcd: ``became leader`` → ``scheduler leading`` (its
load; the log line carries the parts: joining the shared watches, jobs and schedule states,
active runs, rules) → ``scheduler first pass written`` (every job planned once) → the probe's
first run written (``created_at``; the probe's project sorts last, D262), and the node's CPU
seconds until then. ``--burn N`` runs N busy loops (``while 1: pass``) beside it for the whole
run, killed at the end. ``--shards K`` sets ``scheduler_shards``: the node wins all K shards
at once, and its shard 0's times are reported (with D432 its shards read the jobs together).
The load average is printed with each row. Writes ``bench/results/leadtime.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import harness
from bench.harness import NodeProc, Procs, auth_headers, bench_etcd, code_version, machine_info
from bench.large import PREFIX, cpu_s, first_run, log_events, write_jobs
from cluster.etcd import Etcd, Op
from cluster.keys import Keys
from cluster.shard_store import set_shards

RESULTS = Path(__file__).resolve().parent / "results"
EVENTS = {
    "became leader": "elected",
    "scheduler leading": "loaded",
    "scheduler first pass written": "first_pass",
}


def leader_log(path: Path) -> dict[str, Any]:
    """The wall times of the leader's start-up events (the first of each), and the load's
    parts as the ``scheduler leading`` line gives them."""
    docs = log_events(path, EVENTS)
    found: dict[str, Any] = {
        name: datetime.fromisoformat(doc["timestamp"]).timestamp() for name, doc in docs.items()
    }
    if "loaded" in docs:
        found["load_parts_ms"] = docs["loaded"].get("took_ms")
    return found


def loads_done(path: Path) -> tuple[int, float | None]:
    """How many ``scheduler leading`` lines (one per shard led, K > 1) and the last one's time:
    the node leads every shard it won once the last is loaded."""
    count, last = 0, None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"scheduler leading"' in line:
            with contextlib.suppress(ValueError, KeyError):
                last = datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
                count += 1
    return count, last


def _ms(a: float | None, b: float | None) -> float | None:
    return round((b - a) * 1000) if a is not None and b is not None else None


async def leader_row(
    etcd: Etcd, node: NodeProc, cpu_before: float, shards: int = 1
) -> dict[str, Any]:
    """Wait for ``node`` to have written the probe's run as leader (and loaded each of the
    ``shards`` it won); its times."""
    deadline = time.monotonic() + 120
    ev: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ev = leader_log(node.log_path)
        if "elected" in ev:
            break
        await asyncio.sleep(0.1)
    probe = await first_run(etcd, after=ev.get("elected", time.time()), within=120)
    cpu = cpu_s(node.pid) - cpu_before
    for _ in range(50):  # the first-pass line comes right after the pass's writes
        ev = leader_log(node.log_path)
        if "first_pass" in ev:
            break
        await asyncio.sleep(0.1)
    for _ in range(2400):  # a log file to poll, not an event: every shard won loaded
        if loads_done(node.log_path)[0] >= shards:
            break
        await asyncio.sleep(0.05)
    loaded, last = loads_done(node.log_path)
    return {
        "elected_to_loaded_ms": _ms(ev.get("elected"), ev.get("loaded")),
        "load_parts_ms": ev.get("load_parts_ms"),
        "loaded_to_first_pass_ms": _ms(ev.get("loaded"), ev.get("first_pass")),
        "elected_to_first_pass_ms": _ms(ev.get("elected"), ev.get("first_pass")),
        "elected_to_probe_run_ms": _ms(ev.get("elected"), probe),
        "shards_loaded": loaded,
        "elected_to_all_loaded_ms": _ms(ev.get("elected"), last),
        "node_cpu_s_until_probe": round(cpu, 2),
        "node_cpu_s_until_all_loaded": round(cpu_s(node.pid) - cpu_before, 2),
        "lease_lost": "lease lost" in node.log_path.read_text(errors="replace"),
    }


async def write_history(etcd: Etcd, count: int) -> None:
    """``count`` run-history charges (D318), as finished runs leave them: what a new leader's
    history accountant reads at its start."""
    keys = Keys(PREFIX)
    sem = asyncio.Semaphore(8)

    async def chunk(first: int) -> None:
        ops = [
            Op.put(keys.history_charge("probe", f"h{i:09d}"), "900")
            for i in range(first, min(first + 128, count))
        ]
        async with sem:
            await etcd.txn([], ops)

    await asyncio.gather(*(chunk(i) for i in range(0, count, 128)))


async def one(args: argparse.Namespace, procs: Procs, tmp: Path, tree: str, n: int) -> Any:
    folder = tmp / f"{tree}-{n}-{time.monotonic_ns()}"
    folder.mkdir()
    row: dict[str, Any] = {"tree": tree, "jobs": n, "history": args.history, "shards": args.shards}
    row["load_before"] = os.getloadavg()[0]
    async with bench_etcd(folder, procs) as (etcd_server, etcd):
        if args.shards > 1:  # the node wins every shard at once (D432): its loads, together
            await set_shards(etcd, Keys(PREFIX), args.shards)
        await write_jobs(etcd, n, per_project=5000)
        await write_history(etcd, args.history)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout, headers=auth_headers()) as http:

            def node(name: str) -> NodeProc:
                proc = NodeProc(
                    etcd=etcd_server.endpoint,
                    prefix=PREFIX,
                    node_id=name,
                    data_dir=folder / f"data-{name}",
                    log_path=folder / f"{name}.log",
                    capacity=None,
                )
                procs.add(proc)
                return proc

            started = time.time()
            a = node("a")
            await a.wait_leading(http, within=120)
            row["fresh"] = await leader_row(etcd, a, 0.0, args.shards)
            row["fresh"]["process_start_to_elected_ms"] = _ms(
                started, leader_log(a.log_path).get("elected")
            )
            b = node("b")
            await wait_registered(etcd, b)
            await asyncio.sleep(2)  # b settles (imports done, watches open) as a follower
            cpu_b = cpu_s(b.pid)
            await asyncio.to_thread(a.stop)
            procs.remove(a)
            await b.wait_leading(http, within=120)
            row["failover"] = await leader_row(etcd, b, cpu_b, args.shards)
            await asyncio.to_thread(b.stop)
            procs.remove(b)
    row["load_after"] = os.getloadavg()[0]
    return row


async def wait_registered(etcd: Etcd, node: NodeProc) -> None:
    key = Keys(PREFIX).node(node.node_id)
    deadline = time.monotonic() + 120
    while await etcd.get(key) is None:
        if not node.alive() or time.monotonic() > deadline:
            tail = node.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{node!r} did not register (alive: {node.alive()}):\n{tail}")
        await asyncio.sleep(0.1)


async def amain(args: argparse.Namespace, trees: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-leadtime-"))
    rows: list[dict[str, Any]] = []
    saved = harness.ROOT
    try:
        for r in range(args.rounds):
            for n in args.sizes:
                for name, root in trees if r % 2 == 0 else trees[::-1]:
                    harness.ROOT = root  # NodeProc runs `python -m nodes.cli` from there
                    row = await one(args, procs, tmp, name, n)
                    row["round"] = r + 1
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    finally:
        harness.ROOT = saved
        procs.stop_all()
        if args.keep:
            shutil.copytree(
                tmp,
                args.keep,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("data*", "etcd-data*"),
            )
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.leadtime", description=__doc__)
    ap.add_argument("--jobs", default="100,1000", help="sizes, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--tree",
        action="append",
        default=[],
        help="NAME=PATH: run the nodes from this source tree (repeat to alternate trees)",
    )
    ap.add_argument("--burn", type=int, default=0, help="busy loops beside the nodes")
    ap.add_argument("--shards", type=int, default=1, help="scheduler_shards K (one node wins all)")
    ap.add_argument("--keep", help="keep the nodes' logs in this folder")
    ap.add_argument(
        "--history", type=int, default=0, help="run-history charges in etcd (runs kept)"
    )
    args = ap.parse_args(argv)
    args.sizes = [int(s) for s in re.split(r"[,\s]+", args.jobs) if s]
    trees = harness.trees(args.tree)
    burners = [
        subprocess.Popen([sys.executable, "-c", "while 1: pass"], start_new_session=True)
        for _ in range(args.burn)
    ]
    try:
        rows = asyncio.run(amain(args, trees))
    finally:
        for p in burners:
            p.send_signal(signal.SIGKILL)
            p.wait()
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info("n/a"),
        "code": code_version(),
        "burn": args.burn,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "leadtime.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
