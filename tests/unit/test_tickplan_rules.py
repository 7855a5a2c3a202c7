"""`plan_job` with calendars, blackout windows and a freeze (D238): a skipped slot is a tick
record without a run; a deferred slot becomes ONE run at the window's end, keyed by that
instant, written with the state (so a second leader planning from the same state writes the
same key and etcd refuses it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cluster.blackouts import Window, WindowSpec
from cluster.calendars import Calendar, CalendarSpec
from cluster.etcd import Op
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import Job, JobSpec
from cluster.slotlog import tick_ops
from cluster.slotrules import Freeze, SlotRules
from cluster.store import Store
from cluster.tickplan import JobPlan, parse_job, plan_job

T0 = datetime(2026, 3, 10, 10, tzinfo=UTC)  # a Tuesday
KEYS = Keys("/u")


def job(**spec: Any) -> Job:
    spec.setdefault("schedules", [{"cron": "*/10 * * * *"}])
    base = JobSpec(name="j", command="true", **spec)
    return Job(**base.model_dump(), project="p", created_at=T0, updated_at=T0, active_since=T0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def rules(*windows: dict[str, Any], freeze: str | None = None, **cals: dict) -> SlotRules:
    return SlotRules(
        calendars={"p": {n: Calendar(CalendarSpec(name=n, **c)) for n, c in cals.items()}},
        windows={"p": {w["name"]: Window(WindowSpec.model_validate(w), "p") for w in windows}},
        freeze=Freeze(freeze) if freeze else None,
    )


def plan(j: Job, state: dict[str, Any], now: datetime, r: SlotRules) -> JobPlan:
    store = Store.__new__(Store)
    store.clock = lambda: now
    store.ids = Snowflake(1)
    return plan_job(
        j,
        parse_job(j),
        state,
        (),
        now=now,
        ahead=0.0,
        keys=KEYS,
        new_run=store.new_run,
        rules=r.for_job(j.project, j.name, j.tags),
    )


def records(p: JobPlan) -> list[dict[str, Any]]:
    return [json.loads(v) for _, v in p.records]


WINDOW = {"name": "w", "start": at(5).isoformat(), "end": at(35).isoformat()}


def test_skip_window_records_each_slot_and_makes_no_run() -> None:
    j = job()
    state: dict[str, Any] = {}
    fp = j.schedules[0].fingerprint()
    state["schedules"] = {fp: {"last_tick": at(0).isoformat()}}
    p = plan(j, state, at(10) + timedelta(seconds=0.5), rules(WINDOW))
    assert p.runs == []
    [rec] = records(p)
    assert rec["fate"] == rec["outcome"] == "skipped_blackout"
    assert rec["tick"] == at(10).isoformat() and rec["run"] is None
    assert "'w'" in rec["reason"]
    assert p.records[0][0] == KEYS.tick("p", "j", fp, int(at(10).timestamp() * 1000))
    assert p.state["schedules"][fp]["last_tick"] == at(10).isoformat()
    assert p.fates == [("skipped_blackout", 1)]
    # the slot after the window fires
    p2 = plan(j, p.state, at(40) + timedelta(seconds=0.5), rules(WINDOW))
    assert [r.scheduled_at for r, _ in p2.runs] == [at(40)]


def test_defer_window_gives_one_run_at_its_end() -> None:
    j = job()
    fp = j.schedules[0].fingerprint()
    r = rules({**WINDOW, "action": "defer"})
    state: dict[str, Any] = {"schedules": {fp: {"last_tick": at(0).isoformat()}}}
    seen_runs = []
    for minute in (10, 20, 30):
        p = plan(j, state, at(minute) + timedelta(seconds=0.5), r)
        assert p.runs == []
        [rec] = records(p)
        assert rec["fate"] == "deferred" and rec["deferred_to"] == at(35).isoformat()
        assert p.next_due == min(at(minute + 10), at(35))
        state = p.state
    assert state["schedules"][fp]["deferred"] == at(35).isoformat()
    # at the window's end: the one run, keyed by that instant
    p = plan(j, state, at(35) + timedelta(seconds=0.2), r)
    seen_runs = [(run.scheduled_at, key) for run, key in p.runs]
    assert seen_runs == [
        (at(35), KEYS.tick("p", "j", f"{fp}-deferred", int(at(35).timestamp() * 1000)))
    ]
    assert p.runs[0][0].source == "schedule" and p.runs[0][0].schedule == fp
    assert "deferred" not in p.state["schedules"][fp]
    assert p.next_due == at(40)
    # planned again from the same (old) state — a new leader after a failover whose write of
    # the first was not yet seen — it names the same tick key: etcd's absent-compare keeps one
    again = plan(j, state, at(35) + timedelta(seconds=1), r)
    assert [k for _, k in again.runs] == [k for _, k in seen_runs]
    # from the written state nothing is left to fire before the next slot
    after = plan(j, p.state, at(36), r)
    assert after.runs == [] and not after.writes


def test_deferred_run_meets_a_slot_at_the_same_instant() -> None:
    j = job()
    fp = j.schedules[0].fingerprint()
    win = {**WINDOW, "end": at(40).isoformat(), "action": "defer"}
    state: dict[str, Any] = {
        "schedules": {fp: {"last_tick": at(30).isoformat(), "deferred": at(40).isoformat()}}
    }
    p = plan(j, state, at(40) + timedelta(seconds=0.2), rules(win))
    assert [(r.scheduled_at, k.rsplit("-", 1)[-1]) for r, k in p.runs] == [(at(40), fp)]
    assert "deferred" not in p.state["schedules"][fp]


def test_freeze_skips_and_a_deferred_run_meeting_a_freeze_is_skipped() -> None:
    j = job()
    fp = j.schedules[0].fingerprint()
    state: dict[str, Any] = {
        "schedules": {fp: {"last_tick": at(30).isoformat(), "deferred": at(35).isoformat()}}
    }
    p = plan(j, state, at(40) + timedelta(seconds=0.2), rules(freeze="release 4.2"))
    assert p.runs == []
    assert [(r["tick"], r["fate"]) for r in records(p)] == [
        (at(35).isoformat(), "skipped_freeze"),
        (at(40).isoformat(), "skipped_freeze"),
    ]
    assert "release 4.2" in records(p)[1]["reason"]
    assert p.state["schedules"][fp] == {"last_tick": at(40).isoformat()}


def test_calendar_only_business_days_in_the_schedule_zone() -> None:
    j = job(
        schedules=[{"cron": "0 9 * * *", "timezone": "Europe/Paris", "calendar": {"only": ["bd"]}}]
    )
    fp = j.schedules[0].fingerprint()
    r = rules(bd={"business_days": {}})
    sat = datetime(2026, 3, 14, 8, tzinfo=UTC)  # 09:00 in Paris, a Saturday
    state: dict[str, Any] = {
        "schedules": {fp: {"last_tick": (sat - timedelta(days=1)).isoformat()}}
    }
    p = plan(j, state, sat + timedelta(seconds=0.5), r)
    assert p.runs == [] and records(p)[0]["fate"] == "skipped_calendar"
    mon = sat + timedelta(days=2)
    p = plan(j, p.state, mon + timedelta(seconds=0.5), r)
    assert [run.scheduled_at for run, _ in p.runs] == [mon]


def test_many_skipped_slots_are_bounded_per_transaction() -> None:
    j = job(schedules=[{"cron": "* * * * * *"}], catchup="all")
    fp = j.schedules[0].fingerprint()
    state: dict[str, Any] = {"schedules": {fp: {"last_tick": at(0).isoformat()}}}
    p = plan(j, state, at(2), rules(freeze="x"))
    assert len(p.records) == 48 and p.next_due == at(2)


def test_a_deferred_run_too_late_or_from_before_the_job_changed_is_missed() -> None:
    j = job(starting_deadline=60)
    fp = j.schedules[0].fingerprint()
    state: dict[str, Any] = {
        "schedules": {fp: {"last_tick": at(30).isoformat(), "deferred": at(35).isoformat()}}
    }
    # the leader was away until 10 minutes after the window's end: past starting_deadline
    p = plan(j, state, at(45) + timedelta(seconds=0.5), rules())
    assert p.runs == []  # the 10:40 tick is past starting_deadline as well
    assert ("missed", 1) in p.fates and "deferred" not in p.state["schedules"][fp]
    assert at(35).isoformat() in [e["first"] for e in p.state["events"]]
    # a deferral older than the job's active_since (disabled and enabled again meanwhile)
    j2 = job()
    j2.active_since = at(36)
    p = plan(j2, state, at(36) + timedelta(seconds=0.5), rules())
    assert p.runs == [] and ("missed", 1) in p.fates
    assert "deferred" not in p.state["schedules"][fp]


def test_runs_and_skipped_slots_together_fit_one_etcd_transaction() -> None:
    """A catch-up through a window that skips two minutes of every three, with deadlines (each run
    also writes its open-slot key): runs and records of one plan must stay within etcd's 128
    operations, or the job's transaction is refused every time the leader tries it."""
    j = job(
        schedules=[{"cron": "* * * * *"}],
        catchup="all",
        deadlines={"start_within": 30},
    )
    fp = j.schedules[0].fingerprint()
    state: dict[str, Any] = {"schedules": {fp: {"last_tick": at(0).isoformat()}}}
    two_of_three = {"name": "w", "cron": "*/3 * * * *", "duration": 90}
    p = plan(j, state, at(180) + timedelta(seconds=0.5), rules(two_of_three))
    assert p.runs and p.records and p.next_due == at(180) + timedelta(seconds=0.5)
    store = Store.__new__(Store)
    store.keys = KEYS
    ops = [op for run, _ in p.runs for op in store.create_run_ops(run)]
    ops += [
        op
        for run, tick_key in p.runs
        for op in tick_ops(KEYS, run, tick_key, run.source, (30.0, 0.0))
    ]
    ops += [Op.put(k, v) for k, v in p.records]
    assert len(ops) + 1 <= 128  # and the state's put
