"""Airflow for the DAG case: a 50-task chain (every edge: upstream end → downstream start) and a
fan-out of one root to 200 tasks joined by one (root end → each leaf's start), as cronmesh's
``bench.workflows`` measures them (quick mode: 10 and 20 tasks).

Airflow runs the way ``airflow standalone`` sets it up on this machine: a throwaway AIRFLOW_HOME,
SQLite, hence the SequentialExecutor (one task at a time), ``airflow db migrate`` and one
``airflow scheduler``. The web server and triggerer of ``standalone`` are left out: they play
no part in running a DAG and would take CPU from the scheduler on 2 cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import Procs
from bench.peers import measure, runner
from bench.peers.env import BENCH, HERE, venv
from bench.stats import summary_ms

AIRFLOW_VENV = BENCH / ".venv-airflow"


def _stamps(folder: Path) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for start in folder.glob("*.start"):
        end = start.with_suffix(".end")
        try:
            out[start.stem] = (
                int(start.read_text().strip()) / 1e9,
                int(end.read_text().strip()) / 1e9,
            )
        except (OSError, ValueError):
            continue  # not finished yet
    return out


def run(mode: runner.Mode, tmp: Path, procs: Procs, say: Callable[[str], None]) -> dict[str, Any]:
    chain_n, fan_n = mode.dag_sizes
    doc: dict[str, Any] = {
        "peer": "airflow",
        "runs": (
            "Airflow 2.10 as `airflow standalone` configures it on SQLite (SequentialExecutor), "
            "scheduler only; each task a BashOperator that stamps its start and end with `date`"
        ),
    }
    try:
        python = venv(AIRFLOW_VENV, HERE / "requirements-airflow.txt")
    except subprocess.CalledProcessError as exc:
        return {**doc, "error": f"installing Airflow failed: {exc}"}
    airflow = str(python.parent / "airflow")
    home = tmp / "airflow"
    out = tmp / "airflow-stamps"
    (home / "dags").mkdir(parents=True)
    for kind in ("chain", "fanout"):
        (out / kind).mkdir(parents=True)
    shutil.copy(HERE / "airflow_dags.py", home / "dags" / "peers_dags.py")
    env = runner.Peer.env_for(
        out,
        PATH=f"{python.parent}:{os.environ.get('PATH', '')}",  # it runs tasks as `airflow …`
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL="10",
        PEERS_CHAIN=str(chain_n),
        PEERS_FANOUT=str(fan_n),
    )
    say(f"airflow: db migrate, then a chain of {chain_n} and a fan-out of {fan_n}")

    def cli(*args: str) -> None:
        res = subprocess.run(
            [airflow, *args], env=env, cwd=home, capture_output=True, text=True, timeout=600
        )
        if res.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)}: {res.stderr.strip()[-2000:]}")

    load_before = runner.load_average()
    try:
        cli("db", "migrate")
        cli("dags", "reserialize")
        scheduler = runner.PeerProc("airflow-scheduler", [airflow, "scheduler"], env,
                                    home / "scheduler.log")  # fmt: skip
        procs.add(scheduler)
        try:
            per_task = 30.0  # generous: every task is a new `airflow tasks run` process
            for dag, kind, last, n in (
                ("peers_chain", "chain", f"c{chain_n - 1}", chain_n),
                ("peers_fanout", "fanout", "join", fan_n + 2),
            ):
                t0 = time.time()
                cli("dags", "trigger", dag)
                runner.wait_for(
                    lambda kind=kind, last=last: last in _stamps(out / kind),  # type: ignore[misc]
                    120 + per_task * n,
                    f"airflow: {dag} finished",
                    [scheduler],
                )
                say(f"airflow: {dag} ({n} tasks) took {time.time() - t0:.0f} s")
        finally:
            scheduler.stop()
            procs.remove(scheduler)
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
        say(f"airflow: failed: {exc}")
        return {**doc, "error": str(exc)[-2000:]}
    chain_stamps, fan_stamps = _stamps(out / "chain"), _stamps(out / "fanout")
    doc["chain"] = {
        "tasks": chain_n,
        "edge_latency": summary_ms(measure.chain_edges(chain_stamps, chain_n)),
        "wall_s": round(chain_stamps[f"c{chain_n - 1}"][1] - chain_stamps["c0"][0], 2),
    }
    doc["fanout"] = measure.fanout(fan_stamps, fan_n)
    doc["load_average_before"] = load_before
    doc["load_average_after"] = runner.load_average()
    return doc
