"""Run the benchmarks: ``python -m bench.run [--quick] [--only scheduler,e2e,lag]``.

Starts its own etcd (in a temporary folder) and one ``cronmesh node`` process per scenario, runs
the scenarios one after the other (the machine has 2 cores: nothing runs side by side), prints a
table against the goals of GOALS.md and writes one JSON document per scenario to bench/results/.
Every process it started is stopped on exit, on an exception, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from bench.harness import (
    BenchEtcd,
    Procs,
    auth_headers,
    code_version,
    etcd_version,
    machine_info,
)
from bench.scenarios import Context, Mode, e2e_throughput, scheduler_throughput, steady_lag
from cluster.etcd import Etcd

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("scheduler", "e2e", "lag")


# -- the table against the goals ----------------------------------------------------------------


Row = tuple[str, str, str, str]


def _verdict(ok: bool, how: str = "") -> str:
    return ("meets" if ok else "misses") + (f" ({how})" if how else "")


def goal_rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    s = results.get("scheduler_throughput")
    for lv in s["levels"] if s else []:
        fl = lv["fire_lag"]
        rows.append(
            (
                f"scheduler alone: ticks fired/s, {lv['jobs']} jobs every second",
                "(e2e needs ≥ 800/s)",
                f"{lv['runs_created_per_s']:g}/s, fire lag p50 {fl.get('p50_ms')} ms / p99 "
                f"{fl.get('p99_ms')} ms, {lv['ticks_missed_in_window_metric']} missed",
                "keeps up" if lv["keeps_up"] else "falls behind",
            )
        )
    e = results.get("e2e_throughput")
    if e:
        best = e["max_sustained_per_s"]
        rows.append(
            (
                "trivial runs end to end, sustained (best level with a stable queue)",
                "≥ 800 runs/s",
                f"{best:g} runs/s (offered {e['max_sustained_offered']}/s)",
                _verdict(best >= 800, f"{best / 800:.0%} of goal"),
            )
        )
        for lv in e["levels"]:
            rows.append(
                (
                    f"  {lv['jobs']} runs/s offered: finished/s, queue growth",
                    "",
                    f"{lv['succeeded_per_s']:g}/s, queue {lv['queue_depth_start']} → "
                    f"{lv['queue_depth_end']}, lag p50 "
                    f"{lv['start_lag_of_finished'].get('p50_ms')} ms",
                    "sustained" if lv["sustained"] else "overloaded",
                )
            )
    lag = results.get("lag_100")
    if lag:
        sl = lag["start_lag"]
        p50, p99 = sl.get("p50_ms", float("nan")), sl.get("p99_ms", float("nan"))
        rows.append(
            (
                "lag p50 at 100 runs/s (tick → started_at)",
                "≤ 10 ms",
                f"{p50} ms",
                _verdict(p50 <= 10),
            )
        )
        rows.append(
            (
                "lag p99 at 100 runs/s",
                "≤ 40 ms",
                f"{p99} ms (max {sl.get('max_ms')} ms)",
                _verdict(p99 <= 40),
            )
        )
        h = lag["start_lag_histogram"]
        rows.append(
            (
                "  cross-check: cronmesh_start_lag_seconds p50/p99",
                "(same)",
                f"{h.get('p50_ms')} / {h.get('p99_ms')} ms (bucket estimate)",
                "",
            )
        )
        rows.append(
            (
                "missed ticks at 100 runs/s",
                "0",
                f"{lag['missed_ticks']} of {lag['expected_ticks']}",
                _verdict(lag["missed_ticks"] == 0),
            )
        )
        rows.append(
            (
                "duplicate ticks at 100 runs/s",
                "0",
                str(lag["duplicate_ticks"]),
                _verdict(lag["duplicate_ticks"] == 0),
            )
        )
    ed = results.get("etcd_per_run")
    if ed:
        w = ed["write_txns_per_run"]
        rows.append(
            (
                "etcd write txns per run (revision delta / runs)",
                "≤ 3 (≤ 2 amortized)",
                f"{w:g}",
                _verdict(w <= 3, "≤ 2 amortized" if w <= 2 else ""),
            )
        )
        pr = ed["per_run"]
        rows.append(
            (
                "  etcd mvcc per run: put / txn / range / delete",
                "",
                f"{pr['etcd_mvcc_put_total']:g} / {pr['etcd_mvcc_txn_total']:g} / "
                f"{pr['etcd_mvcc_range_total']:g} / {pr['etcd_mvcc_delete_total']:g}",
                "",
            )
        )
    c = results.get("cpu_per_run")
    if c:
        total = c["node_plus_etcd_ms_per_run"]
        rows.append(
            (
                "CPU per run, node + etcd",
                "≤ 1.5 ms",
                f"{total:g} ms (node {c['node_ms_per_run']:g}, etcd {c['etcd_ms_per_run']:g};"
                f" job processes {c['job_processes_ms_per_run']:g})",
                _verdict(total <= 1.5, f"{total / 1.5:.1f} times the budget"),
            )
        )
    return rows


def print_table(rows: list[Row]) -> None:
    head: Row = ("metric", "goal", "measured", "verdict")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print(line)
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(line)


# -- main ----------------------------------------------------------------------------------------


def write(name: str, doc: dict[str, Any], common: dict[str, Any]) -> Path:
    """bench/results/<name>.json (<name>.profiled.json for a --profile run, which is slower)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = ".profiled" if "profile" in common["mode"] else ""
    path = RESULTS / f"{name}{suffix}.json"
    path.write_text(json.dumps({**common, **doc}, indent=2, default=str) + "\n")
    return path


async def amain(args: argparse.Namespace, procs: Procs, tmp: Path) -> int:
    mode = Mode(quick=args.quick, profile=args.profile)
    etcd_server = BenchEtcd(tmp)
    procs.add(etcd_server)
    etcd_server.start()
    etcd = Etcd([etcd_server.endpoint])
    await etcd.connect()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, headers=auth_headers()) as http:
        machine = machine_info(await etcd_version(http, etcd_server.endpoint))
        code = code_version()
        common = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": ("quick" if args.quick else "default") + (" + profile" if args.profile else ""),
            "machine": machine,
            "code": code,
        }
        print(f"machine: {machine}")
        print(f"code: {code}")
        ctx = Context(etcd_server, etcd, http, tmp, procs, mode)
        results: dict[str, dict[str, Any]] = {}
        plan: list[tuple[str, Callable[[Context], Any]]] = [
            ("scheduler", scheduler_throughput),
            ("e2e", e2e_throughput),
            ("lag", steady_lag),
        ]
        started = time.monotonic()
        try:
            for name, fn in plan:
                if name not in args.only:
                    continue
                out = await fn(ctx)
                docs = out if name == "lag" else {out["scenario"]: out}
                for doc_name, doc in docs.items():
                    results[doc_name] = doc
                    path = write(doc_name, doc, common)
                    ctx.say(f"wrote {path.relative_to(RESULTS.parent.parent)}")
        finally:
            await etcd.close()
        after = code_version()
        if after["source_sha1"] != code["source_sha1"]:
            common["code_changed_during_run"] = after
            print(
                f"WARNING: the product's source changed while the benchmark ran: {after}; "
                "numbers may mix versions",
                file=sys.stderr,
            )
        rows = goal_rows(results)
        write(
            "summary",
            {
                "rows": [
                    dict(zip(("metric", "goal", "measured", "verdict"), r, strict=True))
                    for r in rows
                ],
                "elapsed_s": round(time.monotonic() - started, 1),
            },
            common,
        )
        print()
        print(
            f"cronmesh benchmarks, {common['date']} ({common['mode']} mode), "
            f"{machine['nproc']} x {machine['cpu_model']}, Python {machine['python']}, "
            f"etcd {machine['etcd']}"
        )
        print_table(rows)
        print(f"elapsed {time.monotonic() - started:.0f} s; details in {RESULTS}")
    return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short windows (about a minute)")
    ap.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)}",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="profile each node over its window (cProfile: slows the node; the "
        "numbers of such a run are not comparable)",
    )
    ap.add_argument("--keep-tmp", action="store_true", help="keep etcd data and node logs")
    args = ap.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")

    procs = Procs()
    atexit.register(procs.stop_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-bench-"))
    ok = False
    try:
        code = asyncio.run(amain(args, procs, tmp))
        ok = code == 0
        return code
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping what it started", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if ok and not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench: etcd data and node logs kept in {tmp}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
