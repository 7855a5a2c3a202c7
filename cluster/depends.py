"""Cross-job dependencies of a schedule (D291-D296): the spec and its pure decisions.

A schedule may wait on the slots of other jobs or workflows of its project::

    depends_on: [{job: hourly-etl, window: same_day, require: all_succeeded}]
    not_before: "06:00"     # a time gate, in the schedule's zone
    max_wait: 1d            # then the slot ends ``skipped_dependency`` (deadlines come first)

Everything here is pure (no I/O, no clock): windows are computed from the slot's instant and its
schedule's zone, upstream slots from their tick records (the slot outcomes record every slot)
and their runs' statuses as the caller read them. The leader (``nodes/leader/depwait.py``) and
the API (``cluster/depends_store.py``) call the same functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from cluster import outcomes
from cluster.deadlines import duration_seconds
from cluster.depends_spec import MAX_UPSTREAM_SLOTS, Upstream, label

SKIPPED_DEPENDENCY = outcomes.define(
    "skipped_dependency",
    "its upstreams' requirement (depends_on) did not hold within max_wait",
    bad=True,
)
SKIPPED_WAITING_QUOTA = outcomes.define(
    "skipped_waiting_quota",
    "too many slots of its job or project were already waiting on upstreams",
    bad=True,
)

# Upstream slot outcomes that are a planned absence: the slot was never meant to run, so it does
# not hold back ``all_succeeded`` (D292).
EXCUSED = frozenset(
    {
        outcomes.SKIPPED_CALENDAR.name,
        outcomes.SKIPPED_BLACKOUT.name,
        outcomes.SKIPPED_FREEZE.name,
        outcomes.DISABLED.name,
        outcomes.SKIPPED_MAX_RUNS.name,
    }
)
FAILED_RUN = frozenset({"failed", "timed_out", "lost", "cancelled", "skipped"})


# -- windows (D291) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """The instants an upstream slot may have: ``[start, end)`` when ``left``, else
    ``(start, end]``."""

    start: datetime
    end: datetime
    left: bool = False

    def holds(self, t: datetime) -> bool:
        if self.left:
            return self.start <= t < self.end
        return self.start < t <= self.end


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """``day`` at the wall time ``at`` in ``zone``, in UTC: a wall time in a DST gap is moved on
    by the gap (02:30 on a spring-forward day is 03:30), an ambiguous one is its first
    occurrence (fold 0)."""
    return datetime.combine(day, at).replace(tzinfo=zone, fold=0).astimezone(UTC)


def window_of(
    window: str, slot: datetime, zone: str, previous: datetime | None, since: datetime
) -> Window:
    """The window of a dependency for the downstream slot at ``slot``:

    - ``same_day``: the slot's calendar day in the schedule's zone, ``[00:00, next 00:00)``
      (23 or 25 hours on DST days);
    - ``previous_slot``: ``(previous slot, slot]`` — each upstream slot belongs to exactly one
      downstream slot; the first slot of a schedule counts from ``since`` (its job's
      ``active_since``);
    - a duration ``d``: ``(slot - d, slot]`` (elapsed time: DST does not stretch it).
    """
    if window == "same_day":
        tz = ZoneInfo(zone)
        day = slot.astimezone(tz).date()
        start = local_instant(day, time(0), tz)
        end = local_instant(day + timedelta(days=1), time(0), tz)
        return Window(start, end, left=True)
    if window == "previous_slot":
        return Window(previous if previous is not None else since, slot)
    return Window(slot - timedelta(seconds=float(duration_seconds(window))), slot)


def gate_of(not_before: str | None, slot: datetime, zone: str) -> datetime | None:
    """The time gate of a slot: ``not_before`` ("HH:MM") on the slot's date in its zone."""
    if not not_before:
        return None
    tz = ZoneInfo(zone)
    hh, mm = not_before.split(":")
    return local_instant(slot.astimezone(tz).date(), time(int(hh), int(mm)), tz)


class NextAfter(Protocol):
    def next_after(self, t: datetime) -> datetime | None: ...


def expected_slots(
    schedules: Iterable[tuple[str, NextAfter]],
    window: Window,
    active_since: datetime,
    limit: int = MAX_UPSTREAM_SLOTS,
) -> tuple[list[tuple[datetime, str]], bool]:
    """The upstream's slots in ``window`` (instant, schedule fingerprint), ascending, from its
    enabled schedules as they are now, at or after its ``active_since`` (a slot before it was
    never going to fire); and whether ``limit`` cut the list."""
    eps = timedelta(microseconds=1)
    lo, hi = (window.start - eps, window.end - eps) if window.left else (window.start, window.end)
    lo = max(lo, active_since - eps)
    out: list[tuple[datetime, str]] = []
    cut = False
    for fp, sched in schedules:
        tick = sched.next_after(lo)
        while tick is not None and tick <= hi:
            if len(out) >= limit:
                cut = True
                break
            out.append((tick, fp))
            tick = sched.next_after(tick)
    out.sort()
    return out[:limit], cut


def previous_fire(sched: NextAfter, tick: datetime, floor: datetime) -> datetime | None:
    """The schedule's last fire time before ``tick`` and after ``floor`` (None: none), found
    without a backwards search: look back 1 min, 2, 4, … until a fire time shows up, then step
    forward to the last one before ``tick`` (bounded: ≤ 40 doublings, ≤ 10,000 steps)."""
    back = timedelta(minutes=1)
    for _ in range(40):
        start = max(tick - back, floor)
        found = sched.next_after(start)
        if found is not None and found < tick:
            for _ in range(10_000):
                nxt = sched.next_after(found)
                if nxt is None or nxt >= tick:
                    return found
                found = nxt
            return found
        if start <= floor:
            return None
        back *= 2
    return None


# -- upstream slots and the requirement (D292) ---------------------------------------------------

SlotState = Literal["succeeded", "failed", "excused", "pending"]


def slot_run(record: Mapping[str, Any]) -> str | None:
    """The run that stands for an upstream slot: its latest rerun, else its own run."""
    run = record.get("rerun") or record.get("run")
    return run if isinstance(run, str) else None


def slot_state(record: Mapping[str, Any] | None, status: str | None) -> SlotState:
    """One upstream slot, from its tick record and the status of the run (or execution) that
    stands for it (``slot_run``; None when there is none or it is unknown).

    No record yet: pending (its time has not come, or the leader has not handled it). A rule's
    skip (calendar, blackout, freeze, disabled, max_runs): excused. A run: what the run is now
    (so a late or deadline-missed slot whose run succeeded has succeeded, and a rerun that
    succeeds turns a failed slot into a succeeded one). No run and an outcome: failed
    (``skipped_overlap``, a waiter that timed out); no run and no outcome: pending (open,
    waiting on its own upstreams)."""
    if record is None:
        return "pending"
    outcome = outcomes.outcome_of_record(dict(record))
    if status is not None:
        if status == "succeeded":
            return "succeeded"
        return "failed" if status in FAILED_RUN else "pending"
    if outcome in EXCUSED:
        return "excused"
    if outcome is None or outcome == outcomes.DEFERRED.name:
        return "pending"
    return "failed"


@dataclass
class Judgement:
    """One dependency at a look: ``met``, and its slots by state (for the tick log and UI)."""

    upstream: str
    require: str
    window: Window
    met: bool
    counts: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # instants not (yet) meeting it, ≤ 10
    note: str = ""
    # it can no longer be met by slots still to come: only a rerun of a failed one releases it
    blocked: bool = False

    def doc(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "require": self.require,
            "window": {
                "start": self.window.start.isoformat(),
                "end": self.window.end.isoformat(),
                "closed": "left" if self.window.left else "right",
            },
            "met": self.met,
            "slots": self.counts,
            "missing": self.missing,
            "note": self.note,
            "blocked": self.blocked,
        }


def judge(
    require: str, upstream: str, window: Window, states: list[tuple[datetime, SlotState]]
) -> Judgement:
    """Whether ``require`` holds over the upstream's slots in the window:

    - ``all_succeeded``: every slot succeeded or was excused (none at all: holds);
    - ``any_succeeded``: one slot succeeded;
    - ``finished``: no slot is pending (each succeeded, failed or was excused).
    """
    counts = {"succeeded": 0, "failed": 0, "excused": 0, "pending": 0}
    for _, st in states:
        counts[st] += 1
    if require == "all_succeeded":
        met = counts["failed"] == 0 and counts["pending"] == 0
        short = [t for t, st in states if st in ("failed", "pending")]
    elif require == "any_succeeded":
        met = counts["succeeded"] > 0
        short = [] if met else [t for t, st in states if st != "excused"]
    else:
        met = counts["pending"] == 0
        short = [t for t, st in states if st == "pending"]
    # a failed slot stays failed until it is rerun: under all_succeeded one is enough to hold the
    # waiter until max_wait, under any_succeeded when no slot is left to succeed
    blocked = counts["failed"] > 0 and (
        require == "all_succeeded"
        or (require == "any_succeeded" and not met and counts["pending"] == 0)
    )
    return Judgement(
        upstream,
        require,
        window,
        met,
        counts,
        [t.isoformat() for t in short[:10]],
        blocked=blocked,
    )


@dataclass(frozen=True, slots=True)
class Release:
    """The decision for a waiting slot at ``now``: ``release`` (create its run), ``end`` with
    an outcome, or wait until ``next_check`` (None: until an upstream moves)."""

    action: Literal["release", "end", "wait"]
    outcome: str | None = None
    reason: str = ""
    next_check: datetime | None = None


def decide(
    judgements: list[Judgement],
    *,
    now: datetime,
    gate: datetime | None,
    give_up: datetime,
    deadline: datetime | None,
) -> Release:
    """Release when every dependency is met and the gate has passed; else end at the deadline
    (``deadline_missed``: start_within/succeed_within) or at ``give_up`` (``skipped_dependency``),
    whichever comes first; else wait (for an upstream event, or the gate/deadline)."""
    met = all(j.met for j in judgements)
    if met and (gate is None or now >= gate):
        return Release("release", reason=_met(judgements))
    if deadline is not None and deadline <= give_up and now >= deadline:
        within = "not started by its deadline"
        return Release("end", outcomes.DEADLINE_MISSED.name, f"{within}: {_waiting(judgements)}")
    if now >= give_up:
        return Release("end", SKIPPED_DEPENDENCY.name, f"max_wait passed: {_waiting(judgements)}")
    wake = [t for t in (deadline, give_up) if t is not None]
    if met and gate is not None:
        wake.append(gate)
    return Release("wait", next_check=min(wake))


BLOCKED = " (only a rerun of a failed slot releases it: cronmesh run rerun RUN)"


def _met(judgements: list[Judgement]) -> str:
    if not judgements:
        return "time gate passed"
    return "upstreams met: " + ", ".join(
        f"{j.upstream} {j.require} ({j.counts.get('succeeded', 0)} succeeded)" for j in judgements
    )


def _waiting(judgements: list[Judgement]) -> str:
    open_ = [j for j in judgements if not j.met]
    if not open_:
        return "waiting for its time gate"
    return "; ".join(
        f"{j.upstream}: {j.note}"
        if j.note and not any(j.counts.values())
        else f"{j.upstream} {j.require}: {j.counts.get('pending', 0)} pending, "
        f"{j.counts.get('failed', 0)} failed" + (BLOCKED if j.blocked else "")
        for j in open_
    )


# -- cycles at write (D293) ------------------------------------------------------------------


def find_cycle(
    start: Upstream, edges: Mapping[Upstream, Iterable[Upstream]]
) -> list[Upstream] | None:
    """A path ``start → … → start`` through ``edges`` (node → its upstreams), or None."""
    path: list[Upstream] = [start]
    seen: set[Upstream] = set()

    def walk(node: Upstream) -> bool:
        for nxt in edges.get(node, ()):
            if nxt == start:
                path.append(nxt)
                return True
            if nxt in seen:
                continue
            seen.add(nxt)
            path.append(nxt)
            if walk(nxt):
                return True
            path.pop()
        return False

    return path if walk(start) else None


def cycle_text(path: list[Upstream]) -> str:
    return "depends_on cycle: " + " → ".join(label(n) for n in path)


# -- the waiting record (D294) ---------------------------------------------------------------


@dataclass
class Waiting:
    """A slot waiting on upstreams: ``waiting/<project>/<job>/<slot name>``; ``run`` is the run
    to create (minted when the tick fired, so its id is known from the start)."""

    key: str
    project: str
    job: str
    name: str
    tick: datetime
    schedule: str
    fate: str
    run: dict[str, Any]
    tick_key: str
    previous: datetime | None
    since: datetime
    rev: int = 0
    upstreams: list[Upstream] = field(default_factory=list)  # as the schedule had them

    def value(self) -> str:
        return json.dumps(
            {
                "tick": self.tick.isoformat(),
                "schedule": self.schedule,
                "fate": self.fate,
                "run": self.run,
                "tick_key": self.tick_key,
                "previous": self.previous.isoformat() if self.previous else None,
                "since": self.since.isoformat(),
                "upstreams": [list(u) for u in self.upstreams],
            },
            separators=(",", ":"),
            default=str,
        )

    @classmethod
    def parse(cls, key: str, project: str, job: str, name: str, value: bytes, rev: int) -> Waiting:
        doc = json.loads(value)
        prev = doc.get("previous")
        return cls(
            key,
            project,
            job,
            name,
            datetime.fromisoformat(doc["tick"]),
            doc["schedule"],
            doc.get("fate", "schedule"),
            doc["run"],
            doc["tick_key"],
            datetime.fromisoformat(prev) if prev else None,
            datetime.fromisoformat(doc["since"]),
            rev,
            [(str(k), str(n)) for k, n in doc.get("upstreams") or []],
        )
