"""etcd operations and watch events per trivial run, by key family, at default settings:
``python -m bench.etcdops [--jobs 20] [--window 10]``.

One fresh ``cronmesh node`` with no tuning flag on its own etcd, ``--jobs`` jobs running ``true``
every second. Over a window of whole seconds (edges just before a tick, as in the lag scenario):

- every write etcd applied, read back afterwards from etcd's history (a watch from the window's
  first revision, opened only once the window is over, so it adds nothing inside it): puts and
  deletes by key family, and the write transactions by what they hold (a tick's creation, a
  claim, a completion, anything else);
- etcd's own counters (``etcd_mvcc_*_total``: puts, deletes, ranges, txns, compares included)
  and its CPU from ``/proc``;
- the watch events the node received, by the watched family (``cronmesh_watch_events``, D348),
  and its CPU.

Everything is divided by the runs finished in the window. Writes ``bench/results/etcdops.json``
and prints the tables as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    Procs,
    auth_headers,
    bench_etcd,
    by_label,
    code_version,
    diff,
    put_jobs,
    sleep_until,
    value,
)
from bench.scenarios import (
    EDGE,
    PROJECT,
    Context,
    Mode,
    cpu_delta,
    etcd_delta,
    new_prefix,
    snapshot,
    start_node,
    window_start,
)
from cluster.etcd import Etcd, Event

RESULTS = Path(__file__).resolve().parent / "results"
HISTORY_WAIT = 30.0  # s to read the window's history back


def family(key: str, prefix: str) -> str:
    """``/<prefix>/runs/bench/123`` -> ``runs``."""
    return key[len(prefix) + 1 :].split("/", 1)[0]


def txn_kinds(events: list[Event], prefix: str) -> set[str]:
    """What one write transaction (the events of one revision) did for runs: a group commit
    (D137) holds claims and completions together, so one revision may count under several."""
    seen = {(ev.kind, family(ev.kv.key, prefix)) for ev in events}
    kinds = set()
    if ("put", "claims") in seen:
        kinds.add("with a claim")
    if ("delete", "claims") in seen:
        kinds.add("with a completion")
    if ("put", "ticks") in seen:
        kinds.add("with a tick's creation")
    return kinds or {"other: " + ",".join(sorted({f for _, f in seen}))}


async def history(etcd: Etcd, prefix: str, first: int, last: int) -> list[Event]:
    """Every event under ``prefix`` in revisions ``first..last``."""
    out: list[Event] = []

    async def read() -> None:
        async for batch in etcd.watch(prefix + "/", start_revision=first):
            for ev in batch.events:
                if ev.kv.mod_revision > last:
                    return
                out.append(ev)
            if batch.revision >= last and (not out or out[-1].kv.mod_revision >= last):
                return

    await asyncio.wait_for(read(), HISTORY_WAIT)
    return out


def tabulate(events: list[Event], prefix: str, runs: int) -> dict[str, Any]:
    per = max(runs, 1)
    ops = Counter((family(ev.kv.key, prefix), ev.kind) for ev in events)
    by_rev: dict[int, list[Event]] = {}
    for ev in events:
        by_rev.setdefault(ev.kv.mod_revision, []).append(ev)
    kinds = Counter(kind for evs in by_rev.values() for kind in txn_kinds(evs, prefix))
    sizes: Counter[str] = Counter()
    for ev in events:
        if ev.kind == "put":
            sizes[family(ev.kv.key, prefix)] += len(ev.kv.value)
    return {
        "puts_per_run": round(sum(n for (_, k), n in ops.items() if k == "put") / per, 3),
        "deletes_per_run": round(sum(n for (_, k), n in ops.items() if k == "delete") / per, 3),
        "write_txns_per_run": round(len(by_rev) / per, 3),
        "by_family": {f"{fam} {kind}": round(n / per, 3) for (fam, kind), n in sorted(ops.items())},
        "value_bytes_per_run": {fam: round(n / per) for fam, n in sorted(sizes.items())},
        "txns_per_run": {kind: round(n / per, 3) for kind, n in sorted(kinds.items())},
    }


async def measure(args: argparse.Namespace, procs: Procs, tmp: Path) -> dict[str, Any]:
    mode = Mode(quick=False, window=args.window)
    async with bench_etcd(tmp, procs) as (etcd_server, etcd):
        prefix = new_prefix("etcdops")
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60), headers=auth_headers()
        ) as http:
            ctx = Context(etcd_server, etcd, http, tmp, procs, mode)
            node = await start_node(ctx, prefix, "etcdops", capacity=None, properties={})
            try:
                extra = {"keep_runs": args.keep_runs}
                await put_jobs(http, node, PROJECT, args.jobs, extra=extra)
                await asyncio.sleep(mode.warmup)
                t0 = window_start(time.time())
                t1 = t0 + args.window
                await sleep_until(t0 - EDGE)
                first = int((await etcd.status())["revision"]) + 1
                before = await snapshot(ctx, node)
                load_before = os.getloadavg()[0]
                await sleep_until(t1 - EDGE)
                after = await snapshot(ctx, node)
                last = int((await etcd.status())["revision"])
                load_after = os.getloadavg()[0]
            finally:
                await asyncio.to_thread(node.stop)
                procs.remove(node)
            events = await history(etcd, prefix, first, last)
    nd = diff(after.node, before.node)
    runs = int(sum(by_label(nd, "cronmesh_runs_finished_total", "status").values()))
    watched = by_label(nd, "cronmesh_watch_events", "family")
    responses = by_label(nd, "cronmesh_watch_responses", "family")
    per = max(runs, 1)
    return {
        "jobs": args.jobs,
        "window_s": args.window,
        "keep_runs": args.keep_runs,
        "runs_finished": runs,
        "statuses": {
            k: int(v) for k, v in by_label(nd, "cronmesh_runs_finished_total", "status").items()
        },
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        "writes": tabulate(events, prefix, runs),
        "etcd": etcd_delta(before, after, runs),
        "watch_events_per_run": {fam: round(n / per, 3) for fam, n in sorted(watched.items()) if n},
        "watch_events_total_per_run": round(sum(watched.values()) / per, 3),
        "watch_responses_per_run": {
            fam: round(n / per, 3) for fam, n in sorted(responses.items()) if n
        },
        "watch_responses_total_per_run": round(sum(responses.values()) / per, 3),
        "claims": {k: int(v) for k, v in by_label(nd, "cronmesh_claims_total", "outcome").items()},
        "cpu": cpu_delta(before, after, runs),
        "ticks_fired": int(value(nd, "cronmesh_ticks_total", fate="fired")),
    }


def markdown(doc: dict[str, Any]) -> str:
    w, e = doc["writes"], doc["etcd"]
    lines = [
        f"{doc['runs_finished']} runs in {doc['window_s']} s ({doc['jobs']} jobs every second, "
        f"keep_runs {doc['keep_runs']}), load {doc['load_average_1m'][0]} -> "
        f"{doc['load_average_1m'][1]}",
        "",
        "| per run | count |",
        "|---|---|",
        f"| puts (applied) | {w['puts_per_run']} |",
        f"| deletes (applied) | {w['deletes_per_run']} |",
        f"| write transactions (revisions) | {w['write_txns_per_run']} |",
    ]
    lines += [f"| ↳ {kind} | {n} |" for kind, n in w["txns_per_run"].items()]
    lines += [
        f"| etcd {k} | {round(v / max(doc['runs_finished'], 1), 2)} |"
        for k, v in e["totals"].items()
    ]
    lines += [
        f"| node watch events | {doc['watch_events_total_per_run']} |",
        f"| node watch responses | {doc['watch_responses_total_per_run']} |",
        f"| etcd CPU, ms | {doc['cpu']['etcd_ms_per_run']} |",
        f"| node CPU, ms | {doc['cpu']['node_ms_per_run']} |",
        "",
        "| key family | puts / deletes per run | value bytes per run | node watch events per run "
        "| node watch responses per run |",
        "|---|---|---|---|---|",
    ]
    fams = sorted({k.split()[0] for k in w["by_family"]} | set(doc["watch_events_per_run"]))
    for fam in fams:
        puts = w["by_family"].get(f"{fam} put", 0)
        dels = w["by_family"].get(f"{fam} delete", 0)
        size = w["value_bytes_per_run"].get(fam, 0)
        watch = doc["watch_events_per_run"].get(fam, 0)
        resp = doc["watch_responses_per_run"].get(fam, 0)
        lines.append(f"| {fam} | {puts} / {dels} | {size} | {watch} | {resp} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.etcdops", description=__doc__)
    ap.add_argument("--jobs", type=int, default=20, help="jobs every second (= runs/s)")
    ap.add_argument("--window", type=int, default=10, help="seconds measured")
    ap.add_argument(
        "--keep-runs",
        type=int,
        default=1000,
        help="each job's keep_runs: small (e.g. 5) with a window over 60 s to count retention's "
        "deletions too (the leader prunes every 60 s)",
    )
    args = ap.parse_args(argv)
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-etcdops-"))
    try:
        doc = asyncio.run(measure(args, procs, tmp))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    doc["code"] = code_version()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "etcdops.json").write_text(json.dumps(doc, indent=2))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
