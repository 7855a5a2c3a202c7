"""Where a schedule meets a daylight-saving transition (pure): the flag of each fire time in the
preview, and the warnings of a saved schedule whose fixed time a transition skips or repeats in
the coming year (D223).

Flags (None when the fire time is nowhere near a transition):

- ``gap_shifted``: fires at the first instant after a gap because its wall time (or times) did
  not exist (``gap: shift``);
- ``gap_skipped``: the first fire time after a gap whose matching wall times did not fire
  (``gap: skip``);
- ``fold_first`` / ``fold_second``: the first / second occurrence of a repeated wall time.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from cluster.cron import CronSchedule, Schedule
from cluster.cron_zones import (
    ONE_SECOND,
    UTC_KEYS,
    Transition,
    offsets,
    transitions,
    utc_offset_at,
)

WARNING_HORIZON: Final = timedelta(days=366)


def _naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None)


def fire_flags(schedule: Schedule, after: datetime, times: list[datetime]) -> list[str | None]:
    """One flag per fire time of ``times`` (the fire times of ``schedule`` after ``after``, in
    order, as ``next_times`` gives them)."""
    flags: list[str | None] = [None] * len(times)
    if not isinstance(schedule, CronSchedule) or schedule.tz.key in UTC_KEYS:
        return flags
    tz = schedule.tz
    # Where the same expression under ``gap: shift`` fires and this one does not, a gap was
    # skipped.
    shifting = (
        schedule.with_dst(replace(schedule.dst, gap="shift"))
        if schedule.dst.gap == "skip"
        else None
    )
    prev = after
    for i, tick in enumerate(times):
        local = tick.astimezone(tz)
        wall = local.replace(tzinfo=None, fold=0)
        o0, o1 = offsets(tz, wall)
        if o0 > o1:
            flags[i] = "fold_second" if local.fold else "fold_first"
        elif shifting is not None:
            would = shifting.next_after(prev)
            if would is not None and would < tick:
                flags[i] = "gap_skipped"
        else:
            before = utc_offset_at(tz, _naive_utc(tick) - ONE_SECOND)
            if before < o0:  # ``tick`` is the instant of a spring-forward transition
                found = schedule.next_match(wall - (o0 - before) - ONE_SECOND)
                if found is not None and found < wall:
                    flags[i] = "gap_shifted"
        prev = tick
    return flags


@functools.lru_cache(maxsize=256)
def _transitions_from(zone: str, day: date, horizon: timedelta) -> tuple[Transition, ...]:
    """The transitions of ``zone`` from the start of ``day`` (UTC) to a day past ``horizon``:
    finding them costs ~6 ms per zone and year, so saves of one day share them."""
    start = datetime(day.year, day.month, day.day)
    found = transitions(ZoneInfo(zone), start, start + horizon + timedelta(days=1))
    return tuple(found)


def transition_warnings(
    schedules: Iterable[tuple[str, Schedule]], now: datetime, horizon: timedelta = WARNING_HORIZON
) -> list[dict[str, Any]]:
    """Warnings for schedules with a fixed hour whose wall time a transition of their zone skips
    or repeats within ``horizon`` after ``now``: ``{"field", "code", "at", "message"}`` with
    ``field`` the name given with the schedule (``schedules.0``), ``code`` ``dst_gap`` or
    ``dst_fold`` and ``at`` the local wall time. At most one per transition and schedule."""
    out: list[dict[str, Any]] = []
    start = _naive_utc(now)
    for field, schedule in schedules:
        if not isinstance(schedule, CronSchedule) or not schedule.fixed_hour:
            continue
        tz, dst = schedule.tz, schedule.dst
        coming = _transitions_from(tz.key, start.date(), horizon)
        for tr in (t for t in coming if start < t.instant <= start + horizon):
            lo, hi = (tr.before, tr.after) if tr.kind == "gap" else (tr.after, tr.before)
            found = schedule.next_match(lo - ONE_SECOND)
            if found is None or found >= hi:
                continue
            day, hhmm = f"{found:%Y-%m-%d}", f"{found:%H:%M}"
            if tr.kind == "gap":
                what = (
                    "does not run that day (dst.gap: skip)"
                    if dst.gap == "skip"
                    else f"runs at {tr.after:%H:%M} instead (dst.gap: shift)"
                )
                message = (
                    f"{hhmm} does not exist on {day} in {tz.key} (clocks go forward from "
                    f"{tr.before:%H:%M} to {tr.after:%H:%M}): it {what}"
                )
            else:
                what = (
                    "runs twice (dst.fold: both)"
                    if dst.fold == "both"
                    else f"runs once, at the first {hhmm} (dst.fold: {dst.fold})"
                )
                message = (
                    f"{hhmm} happens twice on {day} in {tz.key} (clocks go back from "
                    f"{tr.before:%H:%M} to {tr.after:%H:%M}): it {what}"
                )
            out.append(
                {
                    "field": field,
                    "code": f"dst_{tr.kind}",
                    "at": found.isoformat(),
                    "message": message,
                }
            )
    return out
