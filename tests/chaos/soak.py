"""Soak (criterion 8): steady load on 3 nodes over a 3-member etcd — ``jobs`` jobs every second
(``echo``), so ``jobs`` runs/s — for a long while. etcd's database (the part in use, after
compaction) and every node's memory must plateau, and every tick must still run exactly once.

Plateau: over the last third of the run, the highest sample may exceed the highest of the middle
third by at most ``GROWTH`` (relative) plus a small absolute slack; etcd compacts every
``retention`` (the chart's default is 1 h; the soak uses a short one so it is seen to work). The
samples start at one of the leader's prunes (every minute), so each third holds a peak of the
same sawtooth (D378).

Long mode: ``python -m tests.chaos.soak --minutes 30``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from tests.chaos.checker import check, load_runs
from tests.chaos.harness import (
    MetricMissing,
    check_history,
    history_command,
    read_history,
    read_metric,
)
from tests.chaos.scenario import EVERY_SECOND, PROJECT, Stage, run_command, stage
from tests.chaos.window import handled_through
from tests.conftest import api_session

GROWTH = 0.10
SLACK = {"etcd_in_use_bytes": 2 * 1024 * 1024, "node_rss_bytes": 16 * 1024 * 1024}


def rss(pid: int) -> int:
    """A node's resident memory; a node that is gone (or a kernel without VmRSS) fails the
    scenario (MetricMissing): a plateau of zeros must never pass."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise MetricMissing(f"no /proc/{pid}/status: {exc}") from exc
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise MetricMissing(f"no VmRSS in /proc/{pid}/status")


async def etcd_in_use(http: aiohttp.ClientSession, endpoint: str) -> int:
    return int(await read_metric(http, endpoint, "etcd_mvcc_db_total_size_in_use_in_bytes"))


def plateau(samples: list[int], slack: int) -> dict[str, Any]:
    third = max(1, len(samples) // 3)
    middle, last = samples[third : 2 * third], samples[2 * third :]
    ref, top = max(middle or samples), max(last or samples)
    return {
        "first": samples[0] if samples else 0,
        "middle_max": ref,
        "last_max": top,
        "growth": round((top - ref) / ref, 4) if ref else 0.0,
        "ok": 0 < top <= ref * (1 + GROWTH) + slack,
    }


async def scenario(st: Stage, *, minutes: float, jobs: int, every: float = 5) -> dict[str, Any]:
    assert st.etcd_cluster is not None
    samples: dict[str, list[int]] = {"etcd_in_use_bytes": []}
    async with api_session() as http:
        for i in range(jobs):
            spec = {
                "name": f"soak-{i}",
                "command": history_command(st.history) if i == 0 else "echo soak",
                "schedules": [{"cron": EVERY_SECOND}],
                # every tick must run, late or not: a tick the leader reaches more than 2 s
                # late (a loaded machine: 3.6 s at load 20) is caught up, never dropped by
                # `latest`'s policy (D379)
                "catchup": "all",
            }
            await st.put_job(http, spec | {"keep_runs": 20})
        start = datetime.now(UTC) + timedelta(seconds=1)
        # the samples start at a prune: runs pile up for a minute between the leader's prunes,
        # and thirds that began at any phase compared a ramp with the peak before the next
        # prune (D378)
        await pruned_after(st, datetime.now(UTC), timeout=180)
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            sizes = [await etcd_in_use(http, m.endpoint) for m in st.etcd_cluster.members]
            samples["etcd_in_use_bytes"].append(max(sizes))
            for p in st.cluster.procs:
                samples.setdefault(f"rss {p.node_id}", []).append(rss(p.proc.pid))
            await asyncio.sleep(every)
        end = datetime.now(UTC) - timedelta(seconds=1)
        # the window closes once the leader has decided its last tick: disabling the job before
        # (a leader seconds behind on a loaded machine) left the window's last ticks to no one,
        # and the checker counted them missed (D375)
        await handled_through(st.etcd, st.keys, "soak-0", end)
        for i in range(jobs):
            await st.put_job(http, {"name": f"soak-{i}", "command": "echo soak", "enabled": False})
        runs = await load_runs(st.etcd, st.keys, "default", "soak-0")
        # keep_runs prunes old runs: check the ticks of the last 15 s, which are all still kept
        window = end - timedelta(seconds=15)
        report = check(runs, EVERY_SECOND, window, end)
        # soak-0 records its executions: none of the window's ticks executed twice
        kept = [
            r for r in runs if r.get("scheduled_at") and window < _utc(r["scheduled_at"]) <= end
        ]
        executions = [
            e
            for e in read_history(st.history)
            if e.job == "soak-0" and e.tick != "-" and window < _utc(e.tick) <= end
        ]
        hist = check_history(kept, executions)
        status, body = await _get(http, st.urls[0], f"{PROJECT}/jobs/soak-0/ticks")
    verdicts = {
        name: plateau(
            values, SLACK["etcd_in_use_bytes" if name.startswith("etcd") else "node_rss_bytes"]
        )
        for name, values in samples.items()
    }
    return {
        "report": report,
        "history": hist,
        "plateau": verdicts,
        "samples": samples,
        "window": [start.isoformat(), end.isoformat()],
        "faults": 0,
        "not_fired": [e for e in body.get("not_fired", []) if e.get("fate") == "missed"]
        if status == 200
        else None,
        "ok": report.ok and hist.ok and all(v["ok"] for v in verdicts.values()),
    }


async def pruned_after(st: Stage, since: datetime, timeout: float) -> bool:
    """Wait until a node's log says the leader pruned finished runs after ``since`` (its JSON
    log: ``"event": "pruned finished runs"``); False after ``timeout`` (the samples then start
    where they are, as before)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in [*st.cluster.procs, *st.cluster.retired]:
            with contextlib.suppress(OSError):
                for line in p.log_path.read_text().splitlines():
                    if '"pruned finished runs"' not in line:
                        continue
                    with contextlib.suppress(ValueError, KeyError):
                        if _utc(json.loads(line)["timestamp"]) > since:
                            return True
        await asyncio.sleep(1)
    return False


def _utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


async def _get(http: aiohttp.ClientSession, url: str, path: str) -> tuple[int, Any]:
    async with http.get(f"{url}{path}") as r:
        return r.status, await r.json()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--jobs", type=int, default=30, help="jobs every second (= runs/s)")
    p.add_argument("--retention", default="2m", help="etcd auto-compaction retention")
    p.add_argument("--lease-ttl", type=int, default=5)

    async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
        async with stage(tmp, lease_ttl=args.lease_ttl, compaction=args.retention) as st:
            return await scenario(st, minutes=args.minutes, jobs=args.jobs, every=10)

    run_command("soak", p, run)


if __name__ == "__main__":
    main()
