"""Slot outcomes: the one recorded end of every slot (a schedule's fire time), with its reason,
and the pure deadline decisions that lead to it (D228-D231). No I/O and no clock: ``now`` is an
argument.

The vocabulary is a registry (:data:`OUTCOMES`): a part of cronmesh that ends slots in a new way
(calendars, blackout windows) adds its outcome with :func:`define` (or uses the ones defined
here) and the tick log, the metrics, the API and the UI take it as it is. ``ran`` says whether
the slot's run started (it counts in "ran N of the last M slots"); ``bad`` whether it is worth an
alarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cluster.deadlines import Deadlines
    from cluster.models import ScheduleSpec


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    description: str
    ran: bool = False
    bad: bool = False


OUTCOMES: dict[str, Outcome] = {}


def define(name: str, description: str, *, ran: bool = False, bad: bool = False) -> Outcome:
    """Add an outcome to the vocabulary (idempotent for the same definition)."""
    outcome = Outcome(name, description, ran, bad)
    old = OUTCOMES.get(name)
    if old is not None and old != outcome:
        raise ValueError(f"slot outcome {name!r} is already defined differently")
    OUTCOMES[name] = outcome
    return outcome


FIRED = define("fired", "its run was created on time (and met the slot's deadlines)", ran=True)
CAUGHT_UP = define("caught_up", "its run was created late, by the catch-up policy", ran=True)
BACKFILLED = define("backfilled", "its run was created by a backfill", ran=True)
LATE = define(
    "late", "its run started, but after start_within (seen only after it started)", ran=True
)
DEADLINE_MISSED = define(
    "deadline_missed",
    "not started within start_within, or not succeeded within succeed_within (or no "
    "successful run within expected_every)",
    bad=True,
)
SKIPPED_OVERLAP = define("skipped_overlap", "skipped by the overlap policy", bad=True)
MISSED_OUTAGE = define(
    "missed_outage", "no leader could fire it in time (catch-up policy or starting_deadline)"
)
DISABLED = define("disabled", "the job was disabled at its time")
SKIPPED_MAX_RUNS = define("skipped_max_runs", "the job had made its max_runs runs")
# Calendars and blackout windows (issue 21 item 4) end slots with these.
SKIPPED_CALENDAR = define("skipped_calendar", "the schedule's calendar excludes the day")
SKIPPED_BLACKOUT = define("skipped_blackout", "a blackout window with 'skip' covered it")
SKIPPED_FREEZE = define("skipped_freeze", "the cluster was frozen (cronmesh freeze) at its time")
DEFERRED = define("deferred", "a blackout window with 'defer' moved it to the window's end")

# The fate a tick record has always carried (``tick_record``) → the slot's outcome when the
# slot has nothing left to watch at fire time.
_OF_FATE = {
    "schedule": FIRED.name,
    "catch-up": CAUGHT_UP.name,
    "backfill": BACKFILLED.name,
    "skipped": SKIPPED_OVERLAP.name,
    "missed": MISSED_OUTAGE.name,
    "disabled": DISABLED.name,
    "max_runs": SKIPPED_MAX_RUNS.name,
}

FRESHNESS = "expected"  # the "schedule" of a freshness slot (expected_every)


def outcome_of_fate(fate: str) -> str:
    """The outcome of a slot settled when its tick was handled (no deadline to watch)."""
    return _OF_FATE.get(fate, fate)


def outcome_of_record(record: dict[str, Any]) -> str | None:
    """A tick record's outcome: its own, or (records written before outcomes) its fate's; None
    while the slot is still open."""
    if "outcome" in record:
        out = record["outcome"]
        return out if isinstance(out, str) else None
    fate = record.get("fate")
    return outcome_of_fate(fate) if isinstance(fate, str) else None


# -- deadlines -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotDeadlines:
    """An open slot: its instant and the instants its deadlines fall due (None: no deadline)."""

    due: datetime
    start_by: datetime | None
    succeed_by: datetime | None
    source: str = "schedule"

    @classmethod
    def of(
        cls, due: datetime, start_within: float, succeed_within: float, source: str = "schedule"
    ) -> SlotDeadlines:
        return cls(
            due,
            due + timedelta(seconds=start_within) if start_within else None,
            due + timedelta(seconds=succeed_within) if succeed_within else None,
            source,
        )


@dataclass(frozen=True, slots=True)
class RunView:
    """What the deadline decision needs of a slot's run."""

    id: str
    status: str
    started_at: datetime | None = None  # of its first attempt (a retry waiting has started)
    finished_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """``outcome`` None: still open, look again at ``next_check`` (or on the run's next event)."""

    outcome: str | None
    reason: str = ""
    next_check: datetime | None = None
    lateness: float | None = None  # seconds from the slot's instant to its run's start


def effective_deadlines(
    job: tuple[float, float], schedule: tuple[float, float] | None
) -> tuple[float, float]:
    """(start_within, succeed_within) of a schedule: each set on the schedule wins over the
    job's."""
    if schedule is None:
        return job
    return (schedule[0] or job[0], schedule[1] or job[1])


def _secs(value: float) -> str:
    return f"{value:g} s"


def _late(lateness: float, start_within: float) -> Verdict:
    """A run that started ``lateness`` seconds after its slot, past its ``start_within``."""
    return Verdict(
        LATE.name,
        f"started {_secs(round(lateness, 3))} after its time; start_within is "
        f"{_secs(start_within)}",
        lateness=lateness,
    )


def decide(slot: SlotDeadlines, run: RunView | None, now: datetime) -> Verdict:
    """The slot's outcome at ``now``, or when to look again.

    - no run yet, or a run that has not started: at ``start_by`` (else ``succeed_by``) the slot
      is ``deadline_missed``: a run that was never created, skipped, stuck pending (no node
      fits, waiting for a slot) or waiting on an upstream all end the same way, decided from
      the slot's instant;
    - a run that started: ``late`` when it started after ``start_by`` (the start was seen only
      after the deadline, e.g. across a leader change), else ``fired`` (``caught_up``); with
      ``succeed_within`` the slot waits for the run's success (``deadline_missed`` at
      ``succeed_by`` or as soon as the run ends without success).
    """
    if run is None or run.started_at is None or run.status == "skipped":
        what = (
            "no run was created"
            if run is None
            else f"run {run.id} is {run.status}" + (f" ({run.error})" if run.error else "")
        )
        first = slot.start_by or slot.succeed_by
        if first is None:  # nothing to watch: cannot happen for an open slot
            return Verdict(FIRED.name, "no deadline")
        if now >= first:
            kind = "started" if slot.start_by is not None else "succeeded"
            within = (first - slot.due).total_seconds()
            return Verdict(
                DEADLINE_MISSED.name, f"not {kind} within {_secs(within)}: {what}", lateness=None
            )
        return Verdict(None, next_check=first)
    lateness = (run.started_at - slot.due).total_seconds()
    on_time = CAUGHT_UP.name if slot.source == "catch-up" else FIRED.name
    late = slot.start_by is not None and run.started_at > slot.start_by
    start_within = (slot.start_by - slot.due).total_seconds() if slot.start_by else 0.0
    if slot.succeed_by is None:
        if late:
            return _late(lateness, start_within)
        return Verdict(
            on_time, f"started {_secs(round(lateness, 3))} after its time", None, lateness
        )
    within = (slot.succeed_by - slot.due).total_seconds()
    if run.status == "succeeded" and run.finished_at is not None:
        if run.finished_at > slot.succeed_by:
            return Verdict(
                DEADLINE_MISSED.name,
                f"succeeded {_secs(round((run.finished_at - slot.due).total_seconds(), 3))} "
                f"after its time; succeed_within is {_secs(within)}",
                lateness=lateness,
            )
        if late:
            return _late(lateness, start_within)
        return Verdict(on_time, "succeeded within its deadline", lateness=lateness)
    if run.status in ("failed", "timed_out", "lost", "cancelled"):
        return Verdict(
            DEADLINE_MISSED.name,
            f"not succeeded within {_secs(within)}: run {run.id} {run.status}",
            lateness=lateness,
        )
    if now >= slot.succeed_by:
        return Verdict(
            DEADLINE_MISSED.name,
            f"not succeeded within {_secs(within)}: run {run.id} is {run.status}",
            lateness=lateness,
        )
    return Verdict(None, next_check=slot.succeed_by, lateness=lateness)


def decide_freshness(
    due: datetime, since: datetime, last_success: datetime | None, now: datetime, *, stale: bool
) -> Verdict:
    """A freshness period (``expected_every``) from ``since`` to ``due``: fresh (``fired``) as
    soon as a run succeeded after ``since``; ``deadline_missed`` (stale) at ``due`` otherwise. A
    stale period has no deadline: it waits for the next success (one outcome per stale spell)."""
    if last_success is not None and last_success > since:
        return Verdict(FIRED.name, f"succeeded at {last_success.isoformat()}")
    if stale:
        return Verdict(None)
    if now >= due:
        every = (due - since).total_seconds()
        return Verdict(DEADLINE_MISSED.name, f"no successful run within {_secs(every)} (stale)")
    return Verdict(None, next_check=due)


class WithDeadlines(Protocol):
    """A job or a workflow."""

    @property
    def deadlines(self) -> Deadlines | None: ...
    @property
    def schedules(self) -> list[ScheduleSpec]: ...


def slot_deadlines(job: WithDeadlines) -> dict[str, tuple[float, float]]:
    """The (start_within, succeed_within) of each enabled schedule that has any (D229)."""
    own = job.deadlines.pair() if job.deadlines else (0.0, 0.0)
    out: dict[str, tuple[float, float]] = {}
    for spec in job.schedules:
        if not spec.enabled or (job.deadlines is None and spec.deadlines is None):
            continue
        pair = effective_deadlines(own, spec.deadlines.pair() if spec.deadlines else None)
        if pair != (0.0, 0.0):
            out[spec.fingerprint()] = pair
    return out


# -- the tick log, summed up ------------------------------------------------------------------


def summarize(records: list[dict[str, Any]], late_limit: int = 20) -> dict[str, Any]:
    """ "Ran N of the last M slots": over tick records (newest first), the settled slots, how
    many of them ran, how many each outcome ended, and the late or missed ones (newest first, at
    most ``late_limit``)."""
    counts: dict[str, int] = {}
    ran = slots = open_ = 0
    late: list[dict[str, Any]] = []
    for rec in records:
        out = outcome_of_record(rec)
        if out is None:
            open_ += 1
            continue
        slots += 1
        counts[out] = counts.get(out, 0) + 1
        info = OUTCOMES.get(out)
        if info is not None and info.ran:
            ran += 1
        if out in (LATE.name, DEADLINE_MISSED.name) and len(late) < late_limit:
            late.append(rec)
    return {"slots": slots, "ran": ran, "open": open_, "outcomes": counts, "late": late}
