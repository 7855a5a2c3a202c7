"""Run the benchmarks: ``python -m bench.run [--quick] [--only lag,burst,...]``.

Starts its own etcd (in a temporary folder) and ``cronmesh node`` processes per scenario, runs
the scenarios one after the other (the machine has 2 cores: nothing runs side by side), prints a
table against the goals of GOALS.md and writes one JSON document and one PNG plot per scenario to
bench/results/. The DAG, log-shipping and side-by-side scenarios are their own commands
(``bench.workflows``, ``bench.logs``, ``bench.peers``, each with its own etcd, S3 or peers); this
command runs them as child processes and reads their results into the same table.
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

from bench.burst_failover import burst, failover
from bench.harness import (
    Procs,
    auth_headers,
    bench_etcd,
    code_version,
    etcd_version,
    machine_info,
)
from bench.peers import measure
from bench.plots import plot
from bench.scenarios import Context, Mode, e2e_throughput, scheduler_throughput, steady_lag

RESULTS = Path(__file__).resolve().parent / "results"
IN_PROCESS = ("scheduler", "e2e", "lag", "burst", "failover")
# name: (module, arguments in quick mode, in default mode, the JSON file it writes)
CHILDREN: dict[str, tuple[str, list[str], list[str], str]] = {
    "dag": (
        "bench.workflows",
        ["--repeat", "1", "--chain", "20", "--fanout", "50"],
        [],
        "workflows",
    ),
    "logs": ("bench.logs", ["--quick"], [], "logs"),
    # the peers always in their quick mode: Airflow's SequentialExecutor needs ~15 minutes for the
    # default 200-task fan-out; cronmesh's side is read from this run's results ("latest")
    "peers": (
        "bench.peers",
        ["--quick", "--cronmesh", "latest"],
        ["--quick", "--cronmesh", "latest"],
        "peers",
    ),
}
SCENARIOS = (*IN_PROCESS, *CHILDREN)


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
    rows += more_rows(results)
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
        if "bytes_received_per_run" in ed:
            rows.append(
                (
                    "  etcd bytes per run: received / sent (clients' gRPC)",
                    "",
                    f"{ed['bytes_received_per_run']:,} / {ed['bytes_sent_per_run']:,} B",
                    "",
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


def _ms(d: dict[str, Any] | None, key: str) -> float:
    v = (d or {}).get(key)
    return float("nan") if v is None else float(v)


def more_rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    """Rows of the rate sweep, the bursts, fail-over, the DAG and the log shipping."""
    rows: list[Row] = []
    rates = sorted(int(k[4:]) for k in results if k.startswith("lag_") and k[4:].isdigit())
    for n in rates:
        if n == 100:
            continue
        d = results[f"lag_{n}"]
        p50, p99 = _ms(d["start_lag"], "p50_ms"), _ms(d["start_lag"], "p99_ms")
        cpu = d.get("cpu", {}).get("node_plus_etcd_ms_per_run")
        started = d["succeeded"]
        if started < 0.95 * d["expected_ticks"]:  # the node fell behind: lag grows without end
            measured = (
                f"overloaded: {started} of {d['expected_ticks']} ticks ran within the window "
                f"({d['missed_ticks']} without a run)"
            )
        else:
            measured = (
                f"{p50} / {p99} ms, {d['missed_ticks']} missed of {d['expected_ticks']}, "
                f"CPU {cpu} ms per run"
            )
        ok = p99 <= 150 and d["missed_ticks"] == 0 and started >= 0.95 * d["expected_ticks"]
        rows.append(
            (
                f"lag at {n} runs/s: p50 / p99, missed, CPU per run",
                "p99 ≤ 150 ms" if n == 500 else "",
                measured,
                _verdict(ok) if n == 500 else "",
            )
        )
    for n, limit in ((1000, 1.0), (5000, 5.0)):
        b = results.get(f"burst_{n}")
        if not b:
            continue
        within = b.get("all_started_s")
        ok = within is not None and within <= limit and b["missed"] == 0
        rows.append(
            (
                f"burst: {n} jobs due in the same second, all started within",
                f"≤ {limit:g} s, none missed",
                f"{within if within is not None else 'not all'} s (p50 "
                f"{b['start_offset'].get('p50_ms')} ms), {b['missed']} missed, "
                f"{b['duplicates']} duplicates",
                _verdict(ok),
            )
        )
    f = results.get("failover")
    if f:
        k, g = f["resume_after_kill"], f["resume_after_stop"]
        rows.append(
            (
                f"leader SIGKILL (TTL {f['lease_ttl_s']} s): scheduling resumed, p50 / p99",
                "p99 ≤ 6 s",
                f"{_ms(k, 'p50_ms') / 1000:.2f} / {_ms(k, 'p99_ms') / 1000:.2f} s over "
                f"{k.get('count', 0)} kills",
                _verdict(_ms(k, "p99_ms") <= 6000),
            )
        )
        rows.append(
            (
                "leader stopped gracefully: hand-off",
                "≤ 1 s",
                f"{_ms(g, 'max_ms') / 1000:.2f} s (max of {g.get('count', 0)})",
                _verdict(_ms(g, "max_ms") <= 1000),
            )
        )
        rows.append(
            (
                "  ticks over the fail-over period: missed / duplicates",
                "0 / 0",
                f"{f['missed']} / {f['duplicates']} of {f['ticks_due']} "
                f"({f['late_runs']} caught up late)",
                _verdict(f["missed"] == 0 and f["duplicates"] == 0),
            )
        )
    w = results.get("workflows")
    if w and "chain" in w:
        e = w["chain"]["edge_latency"]
        rows.append(
            (
                f"DAG: chain of {w['chain']['tasks']}, upstream end → downstream start p50 / p99",
                "≤ 10 / ≤ 50 ms",
                f"{e.get('p50_ms')} / {e.get('p99_ms')} ms",
                _verdict(_ms(e, "p50_ms") <= 10 and _ms(e, "p99_ms") <= 50),
            )
        )
        fo = w["fanout"]
        rows.append(
            (
                f"  DAG: fan-out of {fo['tasks']}: root end → leaf start p50, → last leaf",
                "",
                f"{fo['root_end_to_leaf_start'].get('p50_ms')} ms, "
                f"{fo['root_end_to_last_leaf_start'].get('p50_ms')} ms",
                "",
            )
        )
    lg = results.get("logs")
    if lg and "shipping" in lg:
        mib = lg["shipping"]["shipping_mib_s"]
        rows.append(
            ("log shipping to S3, one node", "≥ 50 MB/s", f"{mib} MiB/s", _verdict(mib >= 50))
        )
        small = lg.get("small_logs", {}).get("runs_with_log_in_s3_per_s")
        if small is not None:
            rows.append(
                (
                    "short runs with their logs shipped to S3",
                    "≥ 300 runs/s",
                    f"{small} runs/s",
                    _verdict(small >= 300),
                )
            )
    for name in ("workflows", "logs", "peers"):
        if results.get(name, {}).get("error"):
            rows.append((f"{name}: did not complete", "", results[name]["error"], "error"))
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
    async with bench_etcd(tmp, procs) as (etcd_server, etcd):
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout, headers=auth_headers()) as http:
            machine = machine_info(await etcd_version(http, etcd_server.endpoint))
            code = code_version()
            common = {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "mode": ("quick" if args.quick else "default")
                + (" + profile" if args.profile else ""),
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
                ("burst", burst),
                ("failover", failover),
            ]
            started = time.monotonic()
            for name, fn in plan:
                if name not in args.only:
                    continue
                out = await fn(ctx)
                docs = out if "scenario" not in out else {out["scenario"]: out}
                for doc_name, doc in docs.items():
                    results[doc_name] = doc
                    path = write(doc_name, doc, common)
                    ctx.say(f"wrote {path.relative_to(RESULTS.parent.parent)}")
                    png = plot(doc_name, doc, RESULTS)
                    if png is not None:
                        ctx.say(f"wrote {png.relative_to(RESULTS.parent.parent)}")
            for name, (module, quick_args, default_args, out_name) in CHILDREN.items():
                if name not in args.only or args.profile:
                    continue
                doc = await run_child(ctx, module, quick_args if args.quick else default_args)
                if doc is None:
                    doc = json.loads((RESULTS / f"{out_name}.json").read_text())
                results[out_name] = doc
                png = plot(out_name, doc, RESULTS)
                if png is not None:
                    ctx.say(f"wrote {png.relative_to(RESULTS.parent.parent)}")
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
            comparison = results.get("peers", {}).get("comparison")
            if comparison:
                print("side by side (bench.peers, same machine; ratio = cronmesh / peer):")
                known = [r for r in comparison if r["peer value"] != "—"]  # a peer without the case
                print(measure.format_table([tuple(r[h] for h in measure.HEAD) for r in known]))
            print(f"elapsed {time.monotonic() - started:.0f} s; details in {RESULTS}")
        return 0


async def run_child(ctx: Context, module: str, argv: list[str]) -> dict[str, Any] | None:
    """``python -m module argv`` (its output goes to bench/results/<module>.out); answers None
    when it succeeded (its JSON is read by the caller), an error document otherwise."""
    ctx.say(f"running `python -m {module} {' '.join(argv)}`")
    out = RESULTS / f"{module.split('.')[-1]}.out"
    with open(out, "wb") as f:  # noqa: ASYNC230 (opened once, before the child starts)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *argv, stdout=f, stderr=asyncio.subprocess.STDOUT
        )
        try:
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
    if code != 0:
        ctx.say(f"{module} failed ({code}); see {out}")
        return {"error": f"exit {code}, see {out}"}
    return None


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
