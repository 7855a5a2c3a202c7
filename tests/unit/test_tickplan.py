"""`cluster.tickplan.plan_job`: one job's decision at a tick, table-tested without etcd (the
body of the leader's `_plan`, issue #20). Each case names the job, the stored state, the active
runs, `now` and `ahead`, and what the plan must hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import Job, JobSpec
from cluster.store import Store
from cluster.tickplan import RUNS_PER_TXN, parse_job, plan_job

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = Keys("/u")


def job(**spec: Any) -> Job:
    spec.setdefault("schedules", [{"cron": "* * * * * *"}])
    base = JobSpec(name="j", command="true", **spec)
    return Job(**base.model_dump(), project="p", created_at=T0, updated_at=T0, active_since=T0)


def state_at(j: Job, last: datetime, **extra: Any) -> dict[str, Any]:
    fp = j.schedules[0].fingerprint()
    return {"schedules": {fp: {"last_tick": last.isoformat()}}, **extra}


def sec(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


@dataclass
class Case:
    # job spec
    spec: dict[str, Any] = field(default_factory=dict)
    # stored state
    last: float | None = None  # seconds after T0 of the last handled tick
    fired: int = 0
    dead_schedule: bool = False  # the state holds a schedule the job no longer has
    # environment
    active: tuple[str, ...] = ()
    now: float = 1.005
    ahead: float = 0.0
    # expectations
    ticks: list[float] = field(default_factory=list)  # seconds after T0, in order
    statuses: set[str] = field(default_factory=lambda: {"pending"})
    cancels: list[str] = field(default_factory=list)
    next_due: float | None = 2.0
    writes: bool = True
    fates: list[tuple[str, int]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


CASES = {
    "never ran, one tick due, fires on time": Case(ticks=[1.0]),
    "tick already handled, nothing to write": Case(last=1.0, ticks=[], writes=False),
    "nothing due yet": Case(now=0.5, ticks=[], writes=False, next_due=1.0),
    "late, catch-up latest: the on-time ticks fire, older missed (D374)": Case(
        last=0.0,
        now=10.2,
        ticks=[9.0, 10.0],  # 9 is 1.2 s late, within the 2 s grace: on time, never missed
        next_due=11.0,
        fates=[("missed", 8)],
        events=["missed"],
    ),
    "late, catch-up none: the late ones missed": Case(
        spec={"catchup": "none"},
        last=0.0,
        now=10.5,
        ticks=[9.0, 10.0],  # on time (grace 2 s); no late one
        next_due=11.0,
        fates=[("missed", 8)],
        events=["missed"],
    ),
    "late, catch-up latest, nothing on time: the newest fires, older missed": Case(
        spec={"schedules": [{"cron": "*/5 * * * * *"}]},
        last=0.0,
        now=13.0,
        ticks=[10.0],  # 3 s late: a catch-up
        next_due=15.0,
        fates=[("missed", 1)],
        events=["missed"],
    ),
    "catch-up all, more than one transaction: truncated, due again now": Case(
        spec={"catchup": "all"},
        last=0.0,
        now=40.5,
        ticks=[float(i) for i in range(1, RUNS_PER_TXN + 1)],
        next_due=40.5,
    ),
    "overlap forbid with an active run: skipped": Case(
        spec={"overlap": "forbid"}, active=("r1",), ticks=[1.0], statuses={"skipped"}
    ),
    "overlap replace with active runs: cancels them": Case(
        spec={"overlap": "replace"}, active=("r1", "r2"), ticks=[1.0], cancels=["r1", "r2"]
    ),
    "max_runs reached: no run, the tick is consumed": Case(
        spec={"max_runs": 3}, fired=3, ticks=[], events=["max_runs"]
    ),
    "ahead: the next ticks are planned, started at their instant": Case(
        ahead=2.0, ticks=[1.0, 2.0, 3.0], next_due=2.0
    ),
    "ahead ignored when overlap is not allow": Case(
        spec={"overlap": "forbid"}, ahead=2.0, ticks=[1.0]
    ),
    "a removed schedule's state is forgotten": Case(dead_schedule=True, ticks=[1.0]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_plan_job(name: str) -> None:
    case = CASES[name]
    j = job(**case.spec)
    stored: dict[str, Any] = state_at(j, sec(case.last)) if case.last is not None else {}
    if case.fired:
        stored["fired"] = case.fired
    if case.dead_schedule:
        stored.setdefault("schedules", {})["gone"] = {"last_tick": T0.isoformat()}
    before = repr(stored)
    store = Store(None, KEYS, Snowflake(1), lambda: sec(case.now))  # type: ignore[arg-type]
    plan = plan_job(
        j,
        parse_job(j),
        stored,
        case.active,
        now=sec(case.now),
        ahead=case.ahead,
        keys=KEYS,
        new_run=store.new_run,
    )
    assert repr(stored) == before, "the stored state is not changed in place"
    assert plan.writes is case.writes
    assert [r.scheduled_at for r, _ in plan.runs] == [sec(t) for t in case.ticks]
    if case.ticks:
        assert {r.status for r, _ in plan.runs} == case.statuses
    for run, tick_key in plan.runs:
        assert tick_key == KEYS.tick(
            "p", "j", run.schedule, int(run.scheduled_at.timestamp() * 1000)
        )
        assert (run.not_before is not None) == (run.scheduled_at > sec(case.now))
    assert plan.cancels == case.cancels
    assert plan.next_due == (sec(case.next_due) if case.next_due is not None else None)
    assert plan.fates == case.fates
    if plan.writes:
        assert [e["fate"] for e in plan.state["events"]] == case.events
        assert set(plan.state["schedules"]) == {j.schedules[0].fingerprint()}
        fired = sum(1 for r, _ in plan.runs if r.status != "skipped")
        assert plan.state["fired"] == case.fired + fired


def _plan(j: Job, stored: dict[str, Any], *, now: float, ahead: float) -> Any:
    store = Store(None, KEYS, Snowflake(1), lambda: sec(now))  # type: ignore[arg-type]
    return plan_job(
        j, parse_job(j), stored, [], now=sec(now), ahead=ahead, keys=KEYS, new_run=store.new_run
    )


def test_a_changed_schedule_does_not_fire_again_what_the_old_one_fired_ahead() -> None:
    """Review finding (D290): the old schedule claimed the 2 s tick ahead, then the job changed at
    1.2 s (a new fingerprint, e.g. a DST policy): the new schedule starts after 2 s, not again."""
    old = job(schedules=[{"cron": "* * * * * *"}])
    stored = state_at(old, sec(2))  # fired ahead of time, before the leader saw the change
    new = job(schedules=[{"cron": "*/2 * * * * *"}]).model_copy(update={"active_since": sec(1.2)})
    plan = _plan(new, stored, now=1.3, ahead=1.5)
    assert [run.scheduled_at for run, _ in plan.runs] == []
    later = _plan(new, plan.state if plan.writes else stored, now=3.3, ahead=1.5)
    assert [run.scheduled_at for run, _ in later.runs] == [sec(4)]
    # a tick the old schedule handled BEFORE the change does not hold the new one back
    stale = state_at(old, sec(1))
    plan = _plan(new, stale, now=1.3, ahead=1.5)
    assert [run.scheduled_at for run, _ in plan.runs] == [sec(2)]


def _named(name: str, **spec: Any) -> Job:
    base = JobSpec(name=name, command="true", **spec)
    return Job(**base.model_dump(), project="p", created_at=T0, updated_at=T0, active_since=T0)


def test_jobs_with_the_same_timing_share_one_parsed_schedule_and_hashed_ones_do_not() -> None:
    """D263: a parsed schedule is shared by jobs with the same expression, zone and DST policy;
    one with a hashed field (H) is its job's own, and every one fires as its own parse would."""
    daily = [{"cron": "0 3 * * *", "timezone": "Europe/Berlin"}]
    a, b = _named("a", schedules=daily), _named("b", schedules=daily)
    assert parse_job(a)[0][1] is parse_job(b)[0][1]
    skip = [{**daily[0], "dst": {"gap": "skip"}}]
    assert parse_job(_named("c", schedules=skip))[0][1] is not parse_job(a)[0][1]
    hashed = [{"cron": "H 3 * * *"}]
    ha, hb = parse_job(_named("a", schedules=hashed)), parse_job(_named("b", schedules=hashed))
    assert ha[0][1] is not hb[0][1]
    for j in (a, _named("c", schedules=skip), _named("a", schedules=hashed)):
        shared, own = parse_job(j)[0][1], j.schedules[0].parse(f"p/{j.name}")
        assert shared.next_after(T0) == own.next_after(T0)
    ticks_a = ha[0][1].next_after(T0)
    assert ticks_a == _named("a", schedules=hashed).schedules[0].parse("p/a").next_after(T0)


@pytest.mark.parametrize("catchup", ["latest", "none", "all"])
def test_a_leader_busy_past_a_period_misses_no_on_time_tick(catchup: str) -> None:
    """D374, the soak's missed tick: a job every second, planned 1.5 s ahead, wakes 1.5 s before
    its next tick; a leader whose loop is busy 2.7 s past that wake-up (a loaded machine) finds
    two ticks due, both within the 2 s grace. Both fire, whatever the catch-up policy: with
    ``latest`` (the default) the older was recorded missed."""
    j = job(catchup=catchup)
    wake = _plan(j, state_at(j, sec(2)), now=1.5, ahead=1.5)  # on time: tick 3, ahead
    assert [run.scheduled_at for run, _ in wake.runs] == [sec(3)] and wake.next_due == sec(2.5)
    busy = _plan(j, wake.state, now=2.5 + 2.7, ahead=1.5)  # its next wake-up, 2.7 s late
    fired = [(run.scheduled_at, run.source) for run, _ in busy.runs]
    # 4 and 5 are 1.2 s and 0.2 s late: on time; 6 is planned ahead
    assert fired == [(sec(4), "schedule"), (sec(5), "schedule"), (sec(6), "schedule")], fired
    assert busy.fates == []


@pytest.mark.parametrize(
    ("catchup", "now", "ticks"), [("latest", 2.8, [1, 2]), ("all", 5.5, [1, 2, 3, 4, 5])]
)
def test_replace_with_several_ticks_in_one_plan_starts_only_the_newest(
    catchup: str, now: float, ticks: list[int]
) -> None:
    """D374: a busy leader's on-time ticks (or a catch-up ``all``) of an ``overlap: replace`` job:
    each newer tick replaces the run of the one before, so only the newest runs; the others are
    tick records (skipped), never two runs of a replace job at once."""
    j = job(catchup=catchup, overlap="replace")
    plan = _plan(j, state_at(j, sec(0)), now=now, ahead=0.0)
    assert [r.scheduled_at for r, _ in plan.runs] == [sec(t) for t in ticks]
    assert [r.status for r, _ in plan.runs] == ["skipped"] * (len(ticks) - 1) + ["pending"]
    assert all("replace" in (r.error or "") and r.finished for r, _ in plan.runs[:-1])
    assert plan.state["fired"] == 1
