"""History checker: given the runs recorded in etcd for a job and its schedule, report every tick
of a window that has no run (missed) or more than one run (duplicate), plus lost and unfinished runs.

Rerun it on any cluster: ``python -m tests.chaos.checker --etcd URL --prefix /cronmesh
--project default --job JOB --from ISO --to ISO``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from cluster.cron import parse_schedule, ticks_between
from cluster.etcd import Etcd
from cluster.keys import Keys


@dataclass
class Report:
    ticks: int = 0
    runs: int = 0
    missed: list[str] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    lost_final: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    largest_gap: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missed or self.duplicates or self.lost_final)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "ticks": self.ticks,
            "runs": self.runs,
            "missed": self.missed,
            "duplicates": self.duplicates,
            "lost_final": self.lost_final,
            "unfinished": self.unfinished,
            "largest_gap_s": round(self.largest_gap, 3),
        }


def check(
    runs: Iterable[dict[str, Any]], cron: str, start: datetime, end: datetime, timezone: str = "UTC"
) -> Report:
    """Every tick in ``(start, end]`` must have exactly one run (any source)."""
    sched = parse_schedule(cron=cron, timezone=timezone)
    expected = ticks_between(sched, start, end, 1_000_000)
    by_tick: dict[str, list[str]] = {}
    report = Report(ticks=len(expected))
    started: list[datetime] = []
    for run in runs:
        if not run.get("scheduled_at"):
            continue
        tick = datetime.fromisoformat(run["scheduled_at"]).astimezone(UTC)
        if not start < tick <= end:
            continue
        report.runs += 1
        # keyed by the instant in UTC: the same tick written with another offset is the same tick
        by_tick.setdefault(tick.isoformat(), []).append(run["id"])
        if run["status"] == "lost":
            report.lost_final.append(run["id"])
        if run["status"] in ("pending", "running"):
            report.unfinished.append(run["id"])
        if run.get("created_at"):
            started.append(datetime.fromisoformat(run["created_at"]))
    for due in expected:
        key = due.astimezone(UTC).isoformat()
        ids = by_tick.get(key, [])
        if not ids:
            report.missed.append(key)
        elif len(ids) > 1:
            report.duplicates[key] = ids
    started.sort()
    gaps = [(b - a).total_seconds() for a, b in pairwise(started)]
    report.largest_gap = max(gaps, default=0.0)
    return report


async def load_runs(
    etcd: Etcd, keys: Keys, project: str, job: str | None = None
) -> list[dict[str, Any]]:
    res = await etcd.range(keys.runs(project))
    runs = [json.loads(kv.value) for kv in res.kvs]
    return [r for r in runs if job is None or r["job"] == job]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--etcd", default="http://127.0.0.1:2379")
    p.add_argument("--prefix", default="/cronmesh")
    p.add_argument("--project", default="default")
    p.add_argument("--job", required=True)
    p.add_argument("--cron", help="default: the job's first schedule")
    p.add_argument("--from", dest="start", required=True)
    p.add_argument("--to", dest="end", required=True)
    args = p.parse_args()

    async def run() -> Report:
        async with Etcd(args.etcd.split(",")) as etcd:
            keys = Keys(args.prefix)
            cron = args.cron
            if cron is None:
                kv = await etcd.get(keys.job(args.project, args.job))
                if kv is None:
                    raise SystemExit(f"job {args.job} not found")
                cron = json.loads(kv.value)["schedules"][0]["cron"]
            runs = await load_runs(etcd, keys, args.project, args.job)
            start = datetime.fromisoformat(args.start)
            end = datetime.fromisoformat(args.end)
            return check(runs, cron, start - timedelta(microseconds=1), end)

    report = asyncio.run(run())
    print(json.dumps(report.as_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
