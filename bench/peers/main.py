"""One side-by-side run: set up, run the peers one after the other, compare with cronmesh's latest
results, print the table and write ``bench/results/peers_<date>.json``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import Procs, code_version, machine_info
from bench.peers import measure, runner
from bench.peers.env import peers_python, redis_server

ROOT = runner.ROOT
RESULTS = ROOT / "bench" / "results"
CRONMESH_DOCS = ("lag_100", "cpu_per_run", "e2e_throughput", "burst_1000", "workflows")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def load_cronmesh(results: Path) -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for name in CRONMESH_DOCS:
        path = results / f"{name}.json"
        if path.exists():
            docs[name] = json.loads(path.read_text())
    return docs


def run_cronmesh(*argv: str) -> None:
    """One of cronmesh's benchmarks, before any peer starts (it writes to bench/results)."""
    say(f"cronmesh: running `python -m {' '.join(argv)}`")
    subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, check=True)


def cronmesh_side(how: str, mode: runner.Mode, dags: bool) -> dict[str, Any]:
    """cronmesh's numbers: the latest results, or (``how`` "run", or none there) a fresh run of
    the lag and end-to-end scenarios, and of the DAG case with the peers' sizes."""
    docs = load_cronmesh(RESULTS)
    if how == "run" or "lag_100" not in docs:
        run_cronmesh("bench.run", "--only", "lag,e2e", *(["--quick"] if mode.quick else []))
    if dags and (how == "run" or "workflows" not in docs):
        chain, fan = mode.dag_sizes
        run_cronmesh(
            "bench.workflows", "--repeat", "1", "--chain", str(chain), "--fanout", str(fan)
        )
    docs = load_cronmesh(RESULTS)
    metrics = measure.cronmesh_metrics(docs)
    wf = docs.get("workflows")
    metrics.update(measure.dag_metrics(wf.get("chain"), wf.get("fanout")) if wf else {})
    return {
        "metrics": metrics,
        "sources": {
            name: {
                "date": d.get("date"),
                "mode": d.get("mode"),
                "load_average": d.get("load_average"),
                "commit": (d.get("code") or {}).get("commit"),
            }
            for name, d in docs.items()
        },
    }


def run(*, quick: bool, only: set[str], cronmesh: str = "latest") -> dict[str, Any]:
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-peers-"))
    ok = False
    try:
        doc = _run(quick, only, cronmesh, procs, tmp)
        ok = True
        return doc
    finally:
        procs.stop_all()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench.peers: peer logs kept in {tmp}", file=sys.stderr)


def _run(quick: bool, only: set[str], cronmesh: str, procs: Procs, tmp: Path) -> dict[str, Any]:
    started = time.monotonic()
    mode = runner.Mode(quick=quick)
    doc: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "default",
        "machine": machine_info("n/a"),
        "code": code_version(),
        "load_average_start": runner.load_average(),
    }
    doc["cronmesh"] = (
        cronmesh_side(cronmesh, mode, "airflow" in only) if cronmesh != "skip" else {"metrics": {}}
    )
    peers: list[runner.Peer] = []
    if only & {"celery", "apscheduler"}:
        python = peers_python()
        if "celery" in only:
            redis_server()
            peers.append(runner.CeleryPeer(python, tmp, procs))
        if "apscheduler" in only:
            peers += [runner.APSchedulerPeer(python, tmp, procs, s) for s in ("memory", "sqlite")]
    doc["peers"] = {}
    for peer in peers:
        doc["peers"][peer.name] = runner.run_peer(peer, mode, say)
    if "airflow" in only:
        from bench.peers import airflow_peer

        doc["peers"]["airflow"] = airflow_peer.run(mode, tmp, procs, say)
    doc["load_average_end"] = runner.load_average()
    doc["elapsed_s"] = round(time.monotonic() - started, 1)

    per_peer = {name: measure.peer_metrics(d) for name, d in doc["peers"].items()}
    rows = measure.comparison_rows(doc["cronmesh"]["metrics"], per_peer)
    rows = [r for r in rows if r[2] != "—" or r[3] != "—"]  # a metric neither side measured
    doc["comparison"] = [dict(zip(measure.HEAD, r, strict=True)) for r in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"peers_{stamp}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    shutil.copyfile(path, RESULTS / "peers.json")  # the latest, for bench.run's table

    print()
    print(
        f"side by side, {doc['date']} ({doc['mode']} mode), load average "
        f"{doc['load_average_start']} → {doc['load_average_end']}"
    )
    src = doc["cronmesh"].get("sources", {})
    for name, s in src.items():
        print(f"  cronmesh {name}: {s['date']} ({s['mode']} mode, load {s['load_average']})")
    print(measure.format_table(rows))
    for name, d in doc["peers"].items():
        print(f"  {name} runs: {d.get('runs', d.get('error', ''))}")
    print(f"elapsed {doc['elapsed_s']:.0f} s; wrote {path.relative_to(ROOT)}")
    return doc
