"""The schedule simulator (D240): every slot of every job in a window, as the leader would
decide it — time zone, DST, ``H`` jitter (the schedule's own fire times), calendars, blackout
windows and the freeze (cluster.slotrules) — with starts per minute per executor group and
warnings where many jobs start in the same second on one group. Pure: no I/O, no clock.

It assumes the calendars, windows and freeze stay as they are, and does not model overlap
policies, catch-up or ``max_runs`` (those depend on runs that have not happened yet).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cluster.models import Job
from cluster.slotrules import SlotRules

MAX_WINDOW = timedelta(days=7)
MAX_SLOTS = 10_000  # slots listed at most (the counts cover everything computed)
MAX_WORK = 50_000  # slots computed at most, all jobs together (~1 s of CPU)
CROWD = 5  # starts in one second on one group from this many jobs: a warning
MAX_WARNINGS = 100
ANY_GROUP = "*"  # jobs without a target group


@dataclass
class Simulation:
    slots: list[dict[str, Any]]
    per_minute: dict[str, dict[str, int]]
    warnings: list[dict[str, Any]]
    truncated: bool
    counts: dict[str, int]

    def answer(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "starts_per_minute": self.per_minute,
            "warnings": self.warnings,
            "truncated": self.truncated,
            "counts": self.counts,
        }


def simulate(
    jobs: Iterable[Job],
    rules: SlotRules,
    start: datetime,
    end: datetime,
    *,
    limit: int = MAX_SLOTS,
    crowd: int = CROWD,
) -> Simulation:
    """The slots ``start < t <= end`` of every enabled schedule of the enabled ``jobs``."""
    slots: list[dict[str, Any]] = []
    starts: list[tuple[datetime, str, str]] = []  # (instant, group, project/job)
    counts: Counter[str] = Counter()
    work = 0
    truncated = False
    for job in jobs:
        if not job.enabled:
            continue
        group = job.target.group or ANY_GROUP
        who = f"{job.project}/{job.name}"
        job_rules = rules.for_job(job.project, job.name, job.tags)
        deferred: set[tuple[str, datetime]] = set()
        for spec in job.schedules:
            if not spec.enabled:
                continue
            sched = spec.parse(who)  # its zone, DST policy and H, as the leader parses it
            fp = spec.fingerprint()
            tick = sched.next_after(max(start, job.active_since - timedelta(seconds=1)))
            while tick is not None and tick <= end:
                if work >= MAX_WORK:
                    truncated = True
                    break
                work += 1
                d = job_rules.decide(tick, spec.timezone, spec.calendar)
                counts[d.reason or "fire"] += 1
                slot: dict[str, Any] = {
                    "tick": tick.isoformat(),
                    "project": job.project,
                    "job": job.name,
                    "schedule": fp,
                    "group": group,
                    "outcome": d.outcome,
                }
                if d.reason:
                    slot.update(reason=d.reason, detail=d.detail)
                if d.outcome == "fire":
                    starts.append((tick, group, who))
                elif d.outcome == "defer" and d.to is not None:
                    slot["deferred_to"] = d.to.isoformat()
                    if (fp, d.to) not in deferred and d.to <= end:
                        deferred.add((fp, d.to))
                        if job_rules.decide_deferred(d.to).outcome == "fire":
                            starts.append((d.to, group, who))
                slots.append(slot)
                if len(slots) >= 2 * limit:  # keep the earliest: memory stays bounded
                    slots.sort(key=_order)
                    del slots[limit:]
                    truncated = True
                tick = sched.next_after(tick)
    slots.sort(key=_order)
    if len(slots) > limit:
        del slots[limit:]
        truncated = True
    return Simulation(slots, _per_minute(starts), _crowds(starts, crowd), truncated, dict(counts))


def _order(slot: dict[str, Any]) -> tuple[str, str, str]:
    return slot["tick"], slot["project"], slot["job"]


def _per_minute(starts: list[tuple[datetime, str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for t, group, _ in starts:
        out[group][t.replace(second=0).isoformat()] += 1
    return {g: dict(sorted(c.items())) for g, c in sorted(out.items())}


def _crowds(starts: list[tuple[datetime, str, str]], crowd: int) -> list[dict[str, Any]]:
    same: dict[tuple[str, datetime], set[str]] = defaultdict(set)
    for t, group, who in starts:
        same[(group, t)].add(who)
    out = []
    for (group, t), jobs in sorted(same.items(), key=lambda x: (x[0][1], x[0][0])):
        if len(jobs) >= crowd:
            out.append(
                {
                    "group": group,
                    "at": t.isoformat(),
                    "jobs": len(jobs),
                    "examples": sorted(jobs)[:10],
                    "hint": "these jobs start in the same second on one group: spread them "
                    "with H in their cron fields (e.g. 'H H * * *' or 'H/15 * * * *')",
                }
            )
            if len(out) >= MAX_WARNINGS:
                break
    return out
