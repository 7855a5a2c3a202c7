"""Pure scheduling decisions: which ticks fire now, which are missed, what overlap does, when a
retry may start. No I/O and no clock: every function takes ``now``.

Catch-up semantics (per schedule, over the ticks in ``(start, now]`` where ``start`` is the last
tick already handled, or the moment the job became active, whichever is later):

- a tick is *on time* when ``now - tick <= grace`` (the scheduler was merely busy), otherwise late;
  every on-time tick fires, whatever the policy (D374);
- ``starting_deadline`` (seconds, 0 = none): a tick later than this never starts (missed);
- ``none``: only on-time ticks fire; late ones are missed;
- ``latest``: the on-time ticks fire; when none is, the newest due tick fires (source
  ``catch-up``); older ones are missed;
- ``all``: every due tick within the deadline fires, at most ``limit`` of them (the newest); older
  ones are missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from cluster.cron import Schedule, ticks_between

ON_TIME_GRACE = 2.0
ON_TIME_MAX = 8  # on-time ticks fired at once: a per-second schedule has 3 in the grace at most
MAX_COUNT = 1000  # missed/disabled spans count at most this many ticks exactly
_WINDOW_LIMIT = 100_000
_EPS = timedelta(microseconds=1)

Source = Literal["schedule", "catch-up"]


@dataclass(frozen=True, slots=True)
class TickSpan:
    """A run of consecutive ticks that did not fire; ``count`` is exact up to MAX_COUNT."""

    first: datetime
    last: datetime
    count: int
    more: bool = False  # True when there were more than ``count``


@dataclass(frozen=True, slots=True)
class SchedulePlan:
    fire: list[tuple[datetime, Source]] = field(default_factory=list)
    missed: TickSpan | None = None
    disabled: TickSpan | None = None  # ticks that fell while the job was disabled
    last_tick: datetime | None = None  # newest tick handled by this plan (the new state)
    next_due: datetime | None = None


def newest_ticks(schedule: Schedule, start: datetime, now: datetime, count: int) -> list[datetime]:
    """The newest ``count`` ticks in ``(start, now]``, ascending, without walking from ``start``."""
    width = timedelta(seconds=1)
    while True:
        lo = max(start, now - width)
        ticks = ticks_between(schedule, lo, now, _WINDOW_LIMIT)
        if len(ticks) >= count or lo == start:
            return ticks[-count:]
        width *= 4


def span(schedule: Schedule, start: datetime, end: datetime) -> TickSpan | None:
    """The ticks in ``(start, end]`` summarised."""
    if end <= start:
        return None
    ticks = ticks_between(schedule, start, end, MAX_COUNT + 1)
    if not ticks:
        return None
    if len(ticks) <= MAX_COUNT:
        return TickSpan(ticks[0], ticks[-1], len(ticks))
    last = newest_ticks(schedule, start, end, 1)
    return TickSpan(ticks[0], last[-1], MAX_COUNT, more=True)


def plan_schedule(
    schedule: Schedule,
    *,
    last_tick: datetime | None,
    active_since: datetime,
    now: datetime,
    catchup: str,
    starting_deadline: float,
    limit: int,
    grace: float = ON_TIME_GRACE,
) -> SchedulePlan:
    disabled = None
    if last_tick is not None and last_tick < active_since:
        disabled = span(schedule, last_tick, active_since)
    start = active_since if last_tick is None else max(last_tick, active_since)
    next_due = schedule.next_after(max(now, start))
    newest = newest_ticks(schedule, start, now, 1)
    if not newest:
        return SchedulePlan(disabled=disabled, last_tick=last_tick, next_due=next_due)
    latest = newest[-1]
    floor = now - timedelta(seconds=starting_deadline) if starting_deadline > 0 else None

    def source(tick: datetime) -> Source:
        return "schedule" if (now - tick).total_seconds() <= grace else "catch-up"

    def startable(tick: datetime) -> bool:
        late = (now - tick).total_seconds()
        if floor is not None and tick < floor:
            return False
        return catchup != "none" or late <= grace

    fire: list[datetime]
    if catchup == "all":
        lo = start if floor is None else max(start, floor - _EPS)
        fire = [t for t in newest_ticks(schedule, lo, now, limit) if startable(t)]
    else:
        # on-time ticks are never missed (D374): a leader busy for longer than a period (a
        # loaded machine, materialize_ahead's early wake-up) finds two of them due at once
        on_time: list[datetime] = []
        if source(latest) == "schedule":  # else none is: the newest is the least late
            lo = max(start, now - timedelta(seconds=grace) - _EPS)
            on_time = [t for t in newest_ticks(schedule, lo, now, ON_TIME_MAX) if startable(t)]
        fire = on_time or ([latest] if startable(latest) else [])
    missed_end = fire[0] - _EPS if fire else latest
    return SchedulePlan(
        fire=[(t, source(t)) for t in fire],
        missed=span(schedule, start, missed_end),
        disabled=disabled,
        last_tick=latest,
        next_due=next_due,
    )


OverlapAction = Literal["fire", "skip", "replace"]


def overlap_action(policy: str, active: int, max_parallel: int) -> OverlapAction:
    """What a due tick does while ``active`` runs of its job are pending or running."""
    if active == 0 or policy in ("allow", "queue"):
        return "fire"
    if policy == "replace":
        return "replace"
    return "skip" if active >= max(1, max_parallel) else "fire"


def slot_limit(policy: str, max_parallel: int) -> int:
    """How many runs of a job may execute at once (0: no limit). Only ``allow`` can be unlimited."""
    return max_parallel if policy == "allow" else max(1, max_parallel)


def retry_delay(interval: float, backoff: float, attempt: int, cap: float = 86400.0) -> float:
    """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
    return float(min(cap, interval * backoff ** max(0, attempt - 1)))
