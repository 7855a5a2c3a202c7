"""Workflow latency: upstream task end → downstream process start (goal in ../shared/GOALS.md).

    python -m bench.workflows [--repeat N] [--fanout 200] [--chain 50]

One etcd and one ``cronmesh node`` process (it leads and works). Each task's shell command
stamps the wall clock (``date +%s%N``) as its first and its last action, into a file named after
the task; the latency of an edge is ``start(downstream) - end(upstream)``. Stamping costs a fork
of ``date`` (~1 ms), which is counted in the latency (the numbers are slightly pessimistic).

Scenarios: a chain of ``--chain`` tasks (every edge measured), and a fan-out of one root to
``--fanout`` parallel tasks joined by one final task (root end → each leaf's start; last leaf's
end → join start). Results go to bench/results/workflows.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    NodeProc,
    Procs,
    auth_headers,
    bench_etcd,
    machine_info,
    parse_prom,
)
from bench.stats import histogram_summary_ms, summary_ms

RESULTS = Path(__file__).resolve().parent / "results"
P = "/api/v1/projects/bench"
STAMP = 'date +%s%N > {dir}/"$CRONMESH_TASK".start; date +%s%N > {dir}/"$CRONMESH_TASK".end'


def chain(n: int, stamp: str) -> dict[str, Any]:
    tasks = [{"name": "c0", "command": stamp}]
    tasks += [{"name": f"c{i}", "command": stamp, "depends_on": [f"c{i - 1}"]} for i in range(1, n)]
    return {"name": f"chain{n}", "tasks": tasks, "keep_executions": 5}


def fanout(n: int, stamp: str) -> dict[str, Any]:
    tasks = [{"name": "root", "command": stamp}]
    tasks += [{"name": f"l{i}", "command": stamp, "depends_on": ["root"]} for i in range(n)]
    tasks.append({"name": "join", "command": stamp, "depends_on": [f"l{i}" for i in range(n)]})
    return {"name": f"fanout{n}", "tasks": tasks, "keep_executions": 5}


def iso(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def stamp_of(folder: Path, task: str, kind: str) -> float:
    return int((folder / f"{task}.{kind}").read_text().strip()) / 1e9


async def run_once(
    http: aiohttp.ClientSession, url: str, name: str, folder: Path
) -> dict[str, Any]:
    async with http.post(f"{url}{P}/workflows/{name}/executions", json={}) as r:
        ex = await r.json()
        assert r.status == 201, ex
    deadline = time.monotonic() + 600
    while True:
        async with http.get(f"{url}{P}/executions/{ex['id']}") as r:
            body = await r.json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"execution {ex['id']} did not finish")
        await asyncio.sleep(0.2)
    if body["status"] != "succeeded":
        bad = {n: (t["status"], t["error"]) for n, t in body["tasks"].items() if t["error"]}
        raise RuntimeError(f"execution {ex['id']} {body['status']}: {bad}")
    return dict(body)


async def amain(args: argparse.Namespace, procs: Procs, tmp: Path) -> dict[str, Any]:
    async with bench_etcd(tmp, procs) as (etcd, _):
        node = NodeProc(
            etcd=etcd.endpoint,
            prefix="/bench-wf",
            node_id="wf1",
            data_dir=tmp / "data",
            log_path=tmp / "node.log",
            # tuned: every leaf of a fan-out runs at once (default: 64 per CPU, D261)
            capacity=max(64, args.fanout + 8),
            # 200 processes ending at once stall the node's loop for ~1-2 s on a busy 2-core machine
            # (the executor's per-exit /proc scan): a 3 s lease would expire mid-measurement.
            lease_ttl=10,
            profile=RESULTS / "workflows.prof" if args.profile else None,
        )
        procs.add(node)
        out: dict[str, Any] = {"scenario": "workflows", "repeat": args.repeat}
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout, headers=auth_headers()) as http:
            await node.wait_leading(http)
            node.profiling(True)
            edges: list[float] = []
            claimed: list[float] = []  # upstream run finished (record) → downstream run claimed
            fan: list[float] = []
            fan_last: list[float] = []
            joins: list[float] = []
            walls: dict[str, list[float]] = {"chain": [], "fanout": []}
            for kind, doc_of in (("chain", chain), ("fanout", fanout)):
                size = args.chain if kind == "chain" else args.fanout
                for rep in range(args.repeat + 1):  # the first execution warms up (not counted)
                    folder = tmp / f"{kind}-{rep}"
                    folder.mkdir()
                    doc = doc_of(size, STAMP.format(dir=folder))
                    doc["name"] = f"{doc['name']}-{rep}"
                    async with http.put(f"{node.url}{P}/workflows/{doc['name']}", json=doc) as r:
                        assert r.status in (200, 201), await r.text()
                    t0 = time.time()
                    ex = await run_once(http, node.url, doc["name"], folder)
                    if rep == 0:
                        continue
                    if kind == "chain":
                        walls["chain"].append(
                            stamp_of(folder, f"c{size - 1}", "end")
                            - stamp_of(folder, "c0", "start")
                        )
                        ts = {n: t for n, t in ex["tasks"].items()}
                        for i in range(1, size):
                            claimed.append(
                                iso(ts[f"c{i}"]["started_at"]) - iso(ts[f"c{i - 1}"]["finished_at"])
                            )
                            edges.append(
                                stamp_of(folder, f"c{i}", "start")
                                - stamp_of(folder, f"c{i - 1}", "end")
                            )
                    else:
                        root_end = stamp_of(folder, "root", "end")
                        starts = [stamp_of(folder, f"l{i}", "start") for i in range(size)]
                        fan += [s - root_end for s in starts]
                        fan_last.append(max(starts) - root_end)
                        last_end = max(stamp_of(folder, f"l{i}", "end") for i in range(size))
                        joins.append(stamp_of(folder, "join", "start") - last_end)
                        walls["fanout"].append(stamp_of(folder, "join", "end") - t0)
            out["chain"] = {
                "tasks": args.chain,
                "edge_latency": summary_ms(edges),
                "finished_to_claimed": summary_ms(claimed),
                "edge_ms_sample": [round(e * 1000, 1) for e in edges],
            }
            out["chain"]["wall"] = summary_ms(walls["chain"])
            out["fanout"] = {
                "tasks": args.fanout,
                "root_end_to_leaf_start": summary_ms(fan),
                "root_end_to_last_leaf_start": summary_ms(fan_last),
                "last_leaf_end_to_join_start": summary_ms(joins),
                "trigger_to_join_end": summary_ms(walls["fanout"]),
                "edge_ms_sample": [round(e * 1000, 1) for e in fan],
            }
            node.profiling(False)
            async with http.get(f"{node.url}/metrics") as r:
                samples = parse_prom(await r.text())
            # The leader's own share (finished run read → runs created), over both scenarios.
            out["engine_advance"] = histogram_summary_ms(samples, "cronmesh_dag_advance_seconds")
            out["machine"] = machine_info("3.5")
            out["date"] = datetime.now(UTC).isoformat(timespec="seconds")
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.workflows", description=__doc__)
    ap.add_argument("--repeat", type=int, default=5, help="measured executions per scenario")
    ap.add_argument("--chain", type=int, default=50)
    ap.add_argument("--fanout", type=int, default=200)
    ap.add_argument(
        "--profile", action="store_true", help="cProfile the node: results/workflows.prof"
    )
    ap.add_argument("--keep-tmp", action="store_true", help="keep etcd data and the node log")
    args = ap.parse_args(argv)
    procs = Procs()
    RESULTS.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-bench-wf-"))
    try:
        out = asyncio.run(amain(args, procs, tmp))
    finally:
        procs.stop_all()
        if args.keep_tmp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "workflows.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
