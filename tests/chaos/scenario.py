"""What every chaos scenario shares: the stage (a 3-member etcd cluster and node processes), the
job that records its executions, the end of a tick window (disable the job, read every run back,
run both checkers), and the command-line wrapper of a scenario's long mode.

A scenario is an ``async`` function of a ``Stage`` (pytest calls it short, its command long, D84).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from cluster.etcd import Etcd
from cluster.keys import Keys
from tests.chaos.checker import Report, check, load_runs
from tests.chaos.harness import (
    EtcdCluster,
    HistoryReport,
    api_until_ok,
    check_history,
    history_command,
    key_prefix,
    print_summary,
    read_history,
    scratch,
    summary_row,
    wait_all_ready,
)
from tests.conftest import NodeProcess, ProcessCluster

EVERY_SECOND = "* * * * * *"
PROJECT = "/api/v1/projects/default"


def recorded_job(
    name: str,
    history: Path,
    *,
    cron: str | None = EVERY_SECOND,
    catchup: str = "all",
    work: float = 0.0,
    **extra: Any,
) -> dict[str, Any]:
    """A job whose executions append to ``history`` (see ``history_command``).

    A node that loses its lease stops its runs: they are lost and retried by policy (at least once
    for lost runs); what the checkers hold against is a tick running twice as two ticks.
    """
    return {
        "name": name,
        "command": history_command(history, work),
        "schedules": [{"cron": cron}] if cron else [],
        "catchup": catchup,
        "overlap": "allow",
        "keep_runs": 100_000,  # the checker reads every run of the window back
        "retries": 2,
        "retry_interval": 0,
        **extra,
    }


@dataclass
class Stage:
    cluster: ProcessCluster
    etcd: Etcd  # the checker's own client, straight to the members
    keys: Keys
    history: Path
    etcd_cluster: EtcdCluster | None = None

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.cluster.procs if p.alive()]

    def node(self, node_id: str) -> NodeProcess:
        return next(p for p in self.cluster.procs if p.node_id == node_id)

    async def put_job(self, http: aiohttp.ClientSession, spec: dict[str, Any]) -> None:
        await wait_all_ready(self.cluster)
        await api_until_ok(http, self.urls, "PUT", f"{PROJECT}/jobs/{spec['name']}", json=spec)

    async def close_window(
        self,
        http: aiohttp.ClientSession,
        job: str,
        cron: str,
        start: datetime,
        end: datetime,
    ) -> tuple[Report, HistoryReport]:
        """Stop ``job`` (through any node that answers), then check the ticks in (start, end]."""
        await wait_all_ready(self.cluster, 60)
        path = f"{PROJECT}/jobs/{job}"
        await api_until_ok(http, self.urls, "PATCH", path, json={"enabled": False})
        runs = await load_runs(self.etcd, self.keys, "default", job)
        history = [e for e in read_history(self.history) if e.job == job]
        return check(runs, cron, start, end), check_history(runs, history)


@asynccontextmanager
async def stage(
    tmp: Path,
    *,
    nodes: int = 3,
    lease_ttl: int = 3,
    members: int = 3,
    node_endpoints: list[str] | None = None,
    checker_endpoints: list[str] | None = None,
    also_on: str | None = None,
    compaction: str | None = None,
) -> AsyncIterator[Stage]:
    """A ``members``-member etcd cluster on loopback (none when ``checker_endpoints`` are given)
    and ``nodes`` node processes, which reach etcd through ``node_endpoints`` if given (a proxy).
    Everything is stopped afterwards, also on failure."""
    etcd_cluster = (
        None
        if checker_endpoints
        else EtcdCluster(tmp, size=members, also_on=also_on, compaction=compaction).start()
    )
    direct = checker_endpoints or etcd_cluster.endpoints  # type: ignore[union-attr]
    prefix = key_prefix()
    cluster = ProcessCluster(node_endpoints or direct, prefix, tmp)
    try:
        for i in range(nodes):
            cluster.start(f"node-{i + 1}", lease_ttl=lease_ttl)
        async with Etcd(direct) as etcd:
            yield Stage(cluster, etcd, Keys(prefix), tmp / "history", etcd_cluster)
    finally:
        try:
            cluster.close_and_check()  # an unexpected exit code or exception fails the scenario
        finally:
            if etcd_cluster is not None:
                etcd_cluster.stop()


def run_command(
    name: str,
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace, Path], Coroutine[Any, Any, dict[str, Any]]],
) -> None:
    """The long mode of a scenario: run it in a scratch folder, print its findings as JSON and the
    summary table (also written to ``summary.json`` there), exit 0 only if it passed.

    ``run`` answers a dict with ``ok``, ``faults`` (a count or a list), and optionally ``report``
    (the tick checker's) and ``history`` (the history checker's).
    """
    args = parser.parse_args()
    with scratch() as tmp:
        result = asyncio.run(run(args, tmp))
        report, hist = result.pop("report", None), result.pop("history", None)
        out = {**result}
        if isinstance(report, Report):
            out["checker"] = report.as_dict()
        if hist is not None:
            out["history"] = hist.as_dict() if isinstance(hist, HistoryReport) else hist
        print(json.dumps(out, indent=2, default=str))
        faults = result.get("faults", 0)
        row = summary_row(name, faults if isinstance(faults, int) else len(faults), report)
        row.update(result.get("summary", {}))
        print_summary([row], tmp / "summary.json")
        (tmp / "result.json").write_text(json.dumps(out, indent=2, default=str))
        print(f"logs, history, result.json and summary.json in {tmp}")
    sys.exit(0 if result["ok"] else 1)
