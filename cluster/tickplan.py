"""One job's decision at a tick, as a value (pure: no I/O, no clock; ``now`` is an argument).

:func:`plan_job` composes the decisions of ``cluster.plan`` (catch-up, grace, deadline, overlap)
for every enabled schedule of a job, adds the ticks of the next ``ahead`` seconds as on-time runs
(D120), applies ``max_runs`` and caps the runs of one transaction. The leader writes the answer
in one fenced transaction and counts its fates; nothing here touches etcd or metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cluster.cron import Schedule, ticks_between
from cluster.keys import Keys
from cluster.memo import PerObject
from cluster.models import Job, Run, ScheduleSpec
from cluster.plan import TickSpan, overlap_action, plan_schedule
from cluster.runs import CREATE_RUN_OPS
from cluster.slotrules import DEFERRED, JobRules, SlotDecision

RUNS_PER_TXN = 16
RECORDS_PER_TXN = 48  # tick records of slots skipped or deferred without a run (D238)
# etcd takes at most 128 operations per transaction: a run is its creation and its tick record
# with the open-slot key (``cluster.slotlog.tick_ops``), a skipped slot one record; the rest
# of the 128 is the state's put and the cancels of overlap ``replace``
RUN_OPS = CREATE_RUN_OPS + 2
PLAN_OPS = 120
TXN_BYTES = 512 * 1024
EVENTS_KEPT = 20
# overlap ``replace`` with several ticks in one plan (on-time ticks of a busy leader, D374, or a
# catch-up ``all``): each newer tick replaces the run of the one before, which never starts
REPLACED_IN_PLAN = "skipped by overlap policy 'replace': a newer tick was due at the same time"

NewRun = Callable[..., Run]
"""``Store.new_run``: mints a run of ``job`` (its id and ``created_at``) with the given fields."""


@dataclass
class JobPlan:
    """What to write for one job: its new schedule state, the runs with their tick keys, the runs
    to cancel (overlap ``replace``), when to look again; ``fates`` are tick counts by fate to add
    to the metrics (``missed``, ``disabled``) whether or not anything is written."""

    state: dict[str, Any]
    runs: list[tuple[Run, str]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    next_due: datetime | None = None
    changed: bool = False
    fates: list[tuple[str, int]] = field(default_factory=list)
    records: list[tuple[str, str]] = field(default_factory=list)  # (tick key, record): no run

    @property
    def writes(self) -> bool:
        return self.changed or bool(self.runs) or bool(self.records)


def slot_record(tick: datetime, fp: str, decision: SlotDecision) -> str:
    """The tick record of a slot that a calendar, window or freeze skipped or deferred: its
    outcome is its fate, with the reason (cluster.slotrules)."""
    assert decision.reason is not None
    doc = {
        "tick": tick.isoformat(),
        "schedule": fp,
        "fate": decision.reason,
        "run": None,
        "outcome": decision.reason,
        **decision.record(),
    }
    return json.dumps(doc, separators=(",", ":"))


# Parsed schedules shared by every job with the same timing (D263): a schedule is immutable once
# parsed, and 100,000 jobs mostly share a few expressions. An expression with a hashed field (H)
# depends on its job and is keyed by it. Bounded: cleared when full.
_PARSED: dict[tuple[Any, ...], Schedule] = {}
PARSED_KEPT = 4096


def parse_job(job: Job) -> list[tuple[ScheduleSpec, Schedule]]:
    """The job's enabled schedules, parsed (hashed fields keyed by the job)."""
    out = []
    for spec in job.schedules:
        if spec.enabled:
            hash_key = f"{job.project}/{job.name}"
            dst = (spec.dst.gap, spec.dst.fold) if spec.dst is not None else None
            own = hash_key if spec.cron is not None and "h" in spec.cron.lower() else ""
            key = (spec.cron, spec.at, spec.timezone, dst, own)
            sched = _PARSED.get(key)
            if sched is None:
                sched = spec.parse(hash_key)
                if len(_PARSED) >= PARSED_KEPT:
                    _PARSED.clear()
                _PARSED[key] = sched
            out.append((spec, sched))
    return out


# The size of each job's document and each schedule's fingerprint, kept per object
# (``cluster.memo``): serialising the whole job again at every tick was 4 % of planning a tick
# (D312), hashing the schedule's text again ~7 % (D400).
job_size: PerObject[Job, int] = PerObject(lambda job: len(job.model_dump_json()))
schedule_fp: PerObject[ScheduleSpec, str] = PerObject(lambda spec: spec.fingerprint())


def state_copy(stored: dict[str, Any]) -> dict[str, Any]:
    """A job's schedule state as ``plan_job`` may change it, ``stored`` left as it was: what
    planning edits is copied (the state, its per-schedule map and its events list), the rest
    shared — a schedule's entry and an event are replaced or appended, never edited in place,
    by ``plan_job`` (the only writer of a job's schedule state). A JSON round trip of the whole
    state did the same at ~3x the CPU (D405)."""
    state = dict(stored)
    if "schedules" in state:
        state["schedules"] = dict(state["schedules"])
    if "events" in state:
        state["events"] = list(state["events"])
    return state


def carried_tick(sched_state: dict[str, Any], live: set[str], active_since: datetime) -> str | None:
    """The newest tick a replaced schedule handled since the job last changed, or None (D290).

    A schedule whose text or policy changes gets a new fingerprint and, with it, no state of its
    own. Its ticks start at the job's ``active_since`` (the change), but the replaced schedule
    may already have fired ticks after that instant: the ones claimed ahead (materialize-ahead,
    D120) before the leader saw the change. A new schedule starts after them, so one instant is
    never fired once by the old definition and again by the new one."""
    newest: datetime | None = None
    for fp, entry in sched_state.items():
        if fp in live or not entry.get("last_tick"):
            continue
        tick = datetime.fromisoformat(entry["last_tick"])
        if tick >= active_since and (newest is None or tick > newest):
            newest = tick
    return newest.isoformat() if newest is not None else None


def span_event(span: TickSpan, fate: str, fp: str) -> dict[str, Any]:
    return {
        "fate": fate,
        "schedule": fp,
        "first": span.first.isoformat(),
        "last": span.last.isoformat(),
        "count": span.count,
        "more": span.more,
    }


def plan_job(
    job: Job,
    schedules: Iterable[tuple[ScheduleSpec, Schedule]],
    stored_state: dict[str, Any],
    active: Iterable[str],
    *,
    now: datetime,
    ahead: float,
    keys: Keys,
    new_run: NewRun,
    rules: JobRules | None = None,
) -> JobPlan:
    """Decide one enabled job's due ticks at ``now``.

    ``stored_state`` is the job's schedule state as read (not changed: the answer holds a copy);
    ``active`` the ids of its active runs. Ticks due by ``now`` are decided exactly as without
    planning ahead; the ticks of the next ``ahead`` seconds are added as on-time ticks, to be
    started at their instant, for jobs whose overlap decision cannot change meanwhile (``allow``,
    no parallel limit). ``rules`` (calendars, blackout windows, freeze) may skip or defer a slot
    (D238): a skipped slot is a tick record without a run; a deferred one sets the schedule's
    ``deferred`` instant, where ONE run goes (its tick key is the window's end), written with
    the state's compare like any tick, so a failover cannot fire it twice."""
    schedules = list(schedules)
    active_ids = list(active)
    ahead = ahead if job.overlap == "allow" and not job.max_parallel else 0.0
    horizon = now + timedelta(seconds=ahead)
    state = state_copy(stored_state)
    sched_state: dict[str, Any] = state.setdefault("schedules", {})
    events: list[dict[str, Any]] = state.setdefault("events", [])
    fired_total = int(state.get("fired", 0))
    n_active = len(active_ids)
    # A run is written twice (record + queue entry): keep a transaction well under etcd's
    # 1.5 MiB request limit whatever the job's size.
    per_txn = max(1, min(RUNS_PER_TXN, TXN_BYTES // (2 * job_size(job) + 512)))
    out = JobPlan(state)
    truncated = False
    fps = [schedule_fp(spec) for spec, _ in schedules]
    live = set(fps)
    carried = carried_tick(sched_state, live, job.active_since)
    for (spec, sched), fp in zip(schedules, fps, strict=True):
        last = sched_state.get(fp, {}).get("last_tick") or carried
        deferred = sched_state.get(fp, {}).get("deferred")
        deferred_to = datetime.fromisoformat(deferred) if deferred else None
        plan = plan_schedule(
            sched,
            last_tick=datetime.fromisoformat(last) if last else None,
            active_since=job.active_since,
            now=now,
            catchup=job.catchup,
            starting_deadline=job.starting_deadline,
            limit=job.catchup_limit,
        )
        fire: list[tuple[datetime, str]] = list(plan.fire)
        plan_next = plan.next_due
        if ahead:
            since = plan.last_tick or (datetime.fromisoformat(last) if last else None)
            since = max(since or job.active_since, job.active_since, now)
            coming = ticks_between(sched, since, horizon, RUNS_PER_TXN)
            fire += [(tick, "schedule") for tick in coming]
            plan_next = sched.next_after(coming[-1] if coming else since)
        for span, fate in ((plan.disabled, "disabled"), (plan.missed, "missed")):
            if span is not None:
                events.append(span_event(span, fate, fp))
                out.fates.append((fate, span.count))
        new_last = plan.last_tick
        late = (now - deferred_to).total_seconds() if deferred_to is not None else 0.0
        if deferred_to is not None and (
            deferred_to < job.active_since
            or (job.starting_deadline and late > job.starting_deadline)
        ):
            # deferred from before the job was disabled or changed, or too late to start now
            # (an outage past its starting_deadline): missed, as such ticks are
            events.append(span_event(TickSpan(deferred_to, deferred_to, 1), "missed", fp))
            out.fates.append(("missed", 1))
            deferred_to = None
        if deferred_to is not None and deferred_to <= now + timedelta(seconds=ahead):
            # the deferred slot's one run, at the window's end (or its skip, if a freeze or a
            # skip window holds that instant); a slot of the schedule at that very instant is
            # that run (no second one)
            if all(tick != deferred_to for tick, _ in fire):
                fire.insert(0, (deferred_to, DEFERRED))
            else:
                deferred_to = None
        for tick, source in fire:
            if (
                len(out.runs) >= per_txn
                or len(out.records) >= RECORDS_PER_TXN
                or (len(out.runs) + 1) * RUN_OPS + len(out.records) > PLAN_OPS
            ):
                truncated = True
                break
            is_deferred = source == DEFERRED
            if rules is not None:
                decision = (
                    rules.decide_deferred(tick)
                    if is_deferred
                    else rules.decide(tick, spec.timezone, spec.calendar)
                )
                if decision.outcome != "fire":
                    slot_fp = f"{fp}-deferred" if is_deferred else fp
                    tick_key = keys.tick(
                        job.project, job.name, slot_fp, int(tick.timestamp() * 1000)
                    )
                    out.records.append((tick_key, slot_record(tick, fp, decision)))
                    out.fates.append((decision.reason or "skipped", 1))
                    if is_deferred:
                        deferred_to = None
                    else:
                        new_last = tick
                    if decision.outcome == "defer" and decision.to is not None:
                        deferred_to = max(deferred_to or decision.to, decision.to)
                    continue
            if is_deferred:
                deferred_to = None
                source = "schedule"
            if job.max_runs and fired_total >= job.max_runs:
                events.append(span_event(TickSpan(tick, tick, 1), "max_runs", fp))
                new_last = tick if not is_deferred else new_last
                continue
            action = overlap_action(job.overlap, n_active, job.max_parallel)
            slot_fp = f"{fp}-deferred" if is_deferred else fp
            tick_key = keys.tick(job.project, job.name, slot_fp, int(tick.timestamp() * 1000))
            if action == "skip":
                run = new_run(
                    job,
                    source=source,
                    parameters=spec.parameters,
                    scheduled_at=tick,
                    schedule=fp,
                    status="skipped",
                )
                run.error = f"skipped by overlap policy 'forbid': {n_active} run(s) still active"
            else:
                if action == "replace":
                    out.cancels.extend(r for r in active_ids if r not in out.cancels)
                    for earlier, _ in out.runs:  # this plan's own: replaced before they start
                        if earlier.status != "skipped":
                            earlier.status, earlier.not_before = "skipped", None
                            earlier.error, earlier.finished_at = (
                                REPLACED_IN_PLAN,
                                earlier.created_at,
                            )
                            n_active, fired_total = n_active - 1, fired_total - 1
                run = new_run(
                    job,
                    source=source,
                    parameters=spec.parameters,
                    scheduled_at=tick,
                    schedule=fp,
                )
                if tick > now:
                    run.not_before = tick  # the worker claims it now and starts it then
                n_active += 1
                fired_total += 1
            out.runs.append((run, tick_key))
            if not is_deferred:
                new_last = tick
        if deferred_to is not None and not truncated:
            plan_next = deferred_to if plan_next is None else min(plan_next, deferred_to)
        if truncated:
            # The rest of this schedule's due ticks go in the next transaction, at once.
            out.next_due = now
        elif plan_next is not None:
            wake = plan_next - timedelta(seconds=ahead)
            out.next_due = wake if out.next_due is None else min(out.next_due, wake)
        entry: dict[str, Any] = {}
        if new_last is not None:
            entry["last_tick"] = new_last.isoformat()
        elif last is not None:
            entry["last_tick"] = last
        if deferred_to is not None:
            entry["deferred"] = deferred_to.isoformat()
        if entry != sched_state.get(fp, {}):
            if entry:
                sched_state[fp] = entry
            else:
                sched_state.pop(fp, None)
            out.changed = True
        if truncated:
            break
    if not out.writes:
        return out
    # Forget state of schedules that no longer exist.
    for fp in list(sched_state):
        if fp not in live:
            del sched_state[fp]
    state["events"] = events[-EVENTS_KEPT:]
    state["fired"] = fired_total
    return out
