"""The decision for one slot: fire, skip (with its reason) or defer (to an instant) (D238).

Given a slot (a schedule's fire time), the schedule's calendars, the blackout windows that apply
to its job and the cluster freeze, in this order:

1. a cluster freeze skips it (``skipped_freeze``);
2. its date in the schedule's time zone in a ``skip`` calendar, or in none of its ``only``
   calendars, skips it (``skipped_calendar``);
3. a ``skip`` window holding it skips it (``skipped_blackout``);
4. a ``defer`` window holding it defers it to the window's end (``deferred``); a window ending
   inside another defer window defers to that one's end (bounded);
5. otherwise it fires.

A deferred run, when its instant comes, is decided again by :meth:`JobRules.decide_deferred`:
a freeze or a skip window then skips it; calendars are not asked again (its slot was on a day
to fire). Pure: no I/O, no clock; the caller passes the slot and the rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cluster.blackouts import CHAIN_LIMIT, Window
from cluster.calendars import Calendar, calendar_says
from cluster.models import CalendarRef

# Slot outcomes recorded in the tick log (the ``fate`` of a tick record); names shared with the
# slot-outcome vocabulary of issue 21 item 1.
SKIPPED_FREEZE = "skipped_freeze"
SKIPPED_CALENDAR = "skipped_calendar"
SKIPPED_BLACKOUT = "skipped_blackout"
DEFERRED = "deferred"
SKIP_REASONS = frozenset({SKIPPED_FREEZE, SKIPPED_CALENDAR, SKIPPED_BLACKOUT})

CLUSTER = "*"  # the scope of cluster-wide calendars and windows


@dataclass(frozen=True, slots=True)
class SlotDecision:
    outcome: Literal["fire", "skip", "defer"]
    reason: str | None = None  # one of SKIP_REASONS or DEFERRED
    detail: str = ""
    to: datetime | None = None  # defer: when the one run goes

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.detail}
        if self.to is not None:
            out["deferred_to"] = self.to.isoformat()
        return out


FIRE = SlotDecision("fire")


@dataclass(frozen=True, slots=True)
class Freeze:
    note: str
    by: str | None = None
    at: str | None = None


@dataclass
class JobRules:
    """The rules that apply to one job: its project's calendars over the cluster's (a project
    calendar shadows a cluster one of the same name), the windows that name it, and the freeze."""

    calendars: Mapping[str, Calendar]
    windows: list[Window]
    freeze: Freeze | None = None

    def decide(self, tick: datetime, timezone: str, ref: CalendarRef | None) -> SlotDecision:
        if self.freeze is not None:
            return SlotDecision("skip", SKIPPED_FREEZE, f"cluster frozen: {self.freeze.note}")
        if ref is not None:
            day = tick.astimezone(ZoneInfo(timezone)).date()
            why = calendar_says(ref, day, dict(self.calendars))
            if why is not None:
                return SlotDecision("skip", SKIPPED_CALENDAR, why)
        return self._windows(tick, defer=True)

    def decide_deferred(self, at: datetime) -> SlotDecision:
        if self.freeze is not None:
            return SlotDecision("skip", SKIPPED_FREEZE, f"cluster frozen: {self.freeze.note}")
        return self._windows(at, defer=False)

    def _windows(self, t: datetime, *, defer: bool) -> SlotDecision:
        for w in self.windows:
            if w.action == "skip" and w.holding(t) is not None:
                return SlotDecision("skip", SKIPPED_BLACKOUT, f"in blackout window {w.label!r}")
        if not defer:
            return FIRE
        to: datetime | None = None
        names: list[str] = []
        for _ in range(CHAIN_LIMIT):
            probe = to or t
            held = [
                (occ[1], w)
                for w in self.windows
                if w.action == "defer" and (occ := w.holding(probe))
            ]
            if not held:
                break
            end, w = max(held, key=lambda x: x[0])
            to = end
            names.append(w.label)
        if to is None:
            return FIRE
        return SlotDecision("defer", DEFERRED, f"deferred by blackout window {names[0]!r}", to=to)


@dataclass
class SlotRules:
    """Every calendar and window of the cluster (by scope: a project or ``CLUSTER``) and the
    freeze: what the leader keeps in memory and the plan simulator reads once."""

    calendars: dict[str, dict[str, Calendar]] = field(default_factory=dict)
    windows: dict[str, dict[str, Window]] = field(default_factory=dict)
    freeze: Freeze | None = None

    def for_job(self, project: str, job: str, tags: Iterable[str]) -> JobRules:
        cals = {**self.calendars.get(CLUSTER, {}), **self.calendars.get(project, {})}
        tagset = frozenset(tags)
        wins = [
            w
            for scope in (CLUSTER, project)
            for w in self.windows.get(scope, {}).values()
            if w.applies_to(job, tagset)
        ]
        return JobRules(cals, wins, self.freeze)

    @property
    def empty(self) -> bool:
        return (
            self.freeze is None
            and not any(self.calendars.values())
            and not any(self.windows.values())
        )
