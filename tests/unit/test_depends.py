"""The pure rules of cross-job dependencies (D291-D296): windows in the schedule's zone (DST days
included), the time gate, the upstream slots a window expects, each upstream slot's state from its
tick record, the requirement, the release decision with an injected ``now``, cycles, and the
planner's held slots."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cluster.cron import parse_schedule
from cluster.depends import (
    Judgement,
    Window,
    decide,
    expected_slots,
    find_cycle,
    gate_of,
    judge,
    slot_state,
    window_of,
)
from cluster.depends_plan import hold_runs
from cluster.errors import InvalidInput
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import Job, JobSpec, ScheduleSpec, parse_model
from cluster.runs import RunOps
from cluster.tickplan import JobPlan


def u(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


SINCE = u("2020-01-01T00:00:00+00:00")


@pytest.mark.parametrize(
    ("window", "slot", "zone", "previous", "start", "end", "left"),
    [
        # same_day: the slot's calendar day in its zone, [00:00, next 00:00)
        ("same_day", "2026-06-10T06:00+02:00", "Europe/Paris", None,
         "2026-06-10T00:00+02:00", "2026-06-11T00:00+02:00", True),
        # a Los Angeles evening is that day there, though UTC is a day on
        ("same_day", "2026-11-26T02:00+00:00", "America/Los_Angeles", None,
         "2026-11-25T00:00-08:00", "2026-11-26T00:00-08:00", True),
        # spring forward: the day has 23 hours
        ("same_day", "2026-03-29T12:00+02:00", "Europe/Paris", None,
         "2026-03-29T00:00+01:00", "2026-03-30T00:00+02:00", True),
        # fall back: 25 hours
        ("same_day", "2026-10-25T12:00+01:00", "Europe/Paris", None,
         "2026-10-25T00:00+02:00", "2026-10-26T00:00+01:00", True),
        # a zone whose midnight is skipped (Santiago springs forward at 24:00): from 01:00
        ("same_day", "2026-09-06T12:00-03:00", "America/Santiago", None,
         "2026-09-06T01:00-03:00", "2026-09-07T00:00-03:00", True),
        # previous_slot: (previous, slot]
        ("previous_slot", "2026-06-10T06:00+00:00", "UTC", "2026-06-09T06:00+00:00",
         "2026-06-09T06:00+00:00", "2026-06-10T06:00+00:00", False),
        # no previous slot: from the job's active_since
        ("previous_slot", "2026-06-10T06:00+00:00", "UTC", None,
         "2020-01-01T00:00+00:00", "2026-06-10T06:00+00:00", False),
        # a duration is elapsed time, across the fall-back hour too
        ("3h", "2026-10-25T03:30+01:00", "Europe/Paris", None,
         "2026-10-25T01:30+02:00", "2026-10-25T03:30+01:00", False),
        ("90s", "2026-06-10T06:00+00:00", "UTC", None,
         "2026-06-10T05:58:30+00:00", "2026-06-10T06:00+00:00", False),
    ],
)  # fmt: skip
def test_windows(window, slot, zone, previous, start, end, left):
    got = window_of(window, u(slot), zone, u(previous) if previous else None, SINCE)
    assert (got.start, got.end, got.left) == (u(start), u(end), left)


@pytest.mark.parametrize(
    ("gate", "slot", "zone", "want"),
    [
        (None, "2026-06-10T05:00+00:00", "UTC", None),
        ("06:00", "2026-06-10T05:00+00:00", "UTC", "2026-06-10T06:00+00:00"),
        # the slot's date in its zone (Tokyo's date is a day ahead of UTC's here)
        ("06:00", "2026-06-10T20:00+00:00", "Asia/Tokyo", "2026-06-11T06:00+09:00"),
        # a gate in the spring-forward gap moves on by the gap: 02:30 → 03:30
        ("02:30", "2026-03-29T00:10+01:00", "Europe/Paris", "2026-03-29T03:30+02:00"),
        # an ambiguous gate is its first occurrence
        ("02:30", "2026-10-25T00:10+02:00", "Europe/Paris", "2026-10-25T02:30+02:00"),
    ],
)
def test_time_gate(gate, slot, zone, want):
    got = gate_of(gate, u(slot), zone)
    assert got == (u(want) if want else None)


def test_expected_slots_of_a_day_and_of_an_hourly_job_created_at_noon():
    hourly = parse_schedule(cron="0 * * * *", timezone="Europe/Paris")
    day = window_of("same_day", u("2026-06-10T06:00+02:00"), "Europe/Paris", None, SINCE)
    slots, cut = expected_slots([("fp", hourly)], day, SINCE)
    assert len(slots) == 24 and not cut
    assert slots[0][0] == u("2026-06-10T00:00+02:00") and slots[-1][0] == u(
        "2026-06-10T23:00+02:00"
    )
    # the 23-hour day has 23 hourly slots, the 25-hour one 25
    short = window_of("same_day", u("2026-03-29T12:00+02:00"), "Europe/Paris", None, SINCE)
    long = window_of("same_day", u("2026-10-25T12:00+01:00"), "Europe/Paris", None, SINCE)
    assert len(expected_slots([("fp", hourly)], short, SINCE)[0]) == 23
    assert len(expected_slots([("fp", hourly)], long, SINCE)[0]) == 25
    # an upstream created at noon was never going to fire before
    noon = u("2026-06-10T12:00+02:00")
    slots, _ = expected_slots([("fp", hourly)], day, noon)
    assert len(slots) == 12 and slots[0][0] == noon
    # bounded
    every = parse_schedule(cron="@every 1s", timezone="UTC")
    slots, cut = expected_slots([("fp", every)], day, SINCE, limit=100)
    assert len(slots) == 100 and cut
    # (start, end]: a slot at the window's end belongs to it, one at its start does not
    w = Window(u("2026-06-10T04:00+00:00"), u("2026-06-10T06:00+00:00"))
    ticks = [t for t, _ in expected_slots([("fp", hourly)], w, SINCE)[0]]
    assert ticks == [u("2026-06-10T05:00+00:00"), u("2026-06-10T06:00+00:00")]


@pytest.mark.parametrize(
    ("record", "status", "want"),
    [
        (None, None, "pending"),  # not handled yet
        ({"outcome": None, "run": None, "waiting": True}, None, "pending"),
        ({"outcome": "fired", "run": "r1"}, "succeeded", "succeeded"),
        ({"outcome": "fired", "run": "r1"}, "running", "pending"),
        ({"outcome": "fired", "run": "r1"}, "pending", "pending"),
        ({"outcome": "fired", "run": "r1"}, "failed", "failed"),
        ({"outcome": "fired", "run": "r1"}, "timed_out", "failed"),
        ({"outcome": "fired", "run": "r1"}, "lost", "failed"),
        ({"outcome": "late", "run": "r1"}, "succeeded", "succeeded"),
        ({"outcome": "deadline_missed", "run": "r1"}, "succeeded", "succeeded"),
        ({"outcome": "deadline_missed", "run": None}, None, "failed"),
        ({"outcome": "skipped_overlap", "run": "r1"}, "skipped", "failed"),
        ({"outcome": "skipped_calendar", "run": None}, None, "excused"),
        ({"outcome": "skipped_blackout", "run": None}, None, "excused"),
        ({"outcome": "skipped_freeze", "run": None}, None, "excused"),
        ({"outcome": "deferred", "run": None}, None, "pending"),
        ({"outcome": "skipped_dependency", "run": None}, None, "failed"),
        ({"fate": "schedule", "run": "r1"}, "succeeded", "succeeded"),  # before outcomes
    ],
)
def test_upstream_slot_states(record, status, want):
    assert slot_state(record, status) == want


T = [u(f"2026-06-10T{h:02d}:00+00:00") for h in range(4)]
W = Window(T[0], T[3], left=True)


@pytest.mark.parametrize(
    ("require", "states", "met", "missing"),
    [
        ("all_succeeded", ["succeeded", "succeeded", "excused"], True, 0),
        ("all_succeeded", ["succeeded", "failed", "succeeded"], False, 1),
        ("all_succeeded", ["succeeded", "pending"], False, 1),
        ("all_succeeded", [], True, 0),  # nothing expected: nothing to wait for
        ("any_succeeded", ["failed", "succeeded", "pending"], True, 0),
        ("any_succeeded", ["failed", "excused", "pending"], False, 2),
        ("any_succeeded", [], False, 0),
        ("finished", ["failed", "succeeded", "excused"], True, 0),
        ("finished", ["failed", "pending"], False, 1),
    ],
)
def test_requirements(require, states, met, missing):
    got = judge(require, "up", W, list(zip(T, states, strict=False)))
    assert got.met is met
    assert len(got.missing) == missing
    assert sum(got.counts.values()) == len(states)


def _j(met: bool) -> Judgement:
    return judge("finished", "up", W, [(T[0], "succeeded" if met else "pending")])


NOW = u("2026-06-10T06:00+00:00")


@pytest.mark.parametrize(
    ("met", "gate", "deadline", "give_up", "action", "outcome", "next_check"),
    [
        (True, None, None, 3600, "release", None, None),
        (True, -1, None, 3600, "release", None, None),  # the gate has passed
        (True, 60, None, 3600, "wait", None, 60),  # met, waits for its gate
        (False, None, None, 3600, "wait", None, 3600),  # until an upstream moves, or max_wait
        (False, None, 600, 3600, "wait", None, 600),
        (False, None, 0, 3600, "end", "deadline_missed", None),
        (False, None, None, 0, "end", "skipped_dependency", None),
        (False, None, 7200, 0, "end", "skipped_dependency", None),  # max_wait comes first
        (True, 60, 0, 3600, "end", "deadline_missed", None),  # gate later than the deadline
    ],
)
def test_release_decision(met, gate, deadline, give_up, action, outcome, next_check):
    def at(s: float | None) -> datetime | None:
        return None if s is None else NOW + timedelta(seconds=s)

    got = decide([_j(met)], now=NOW, gate=at(gate), give_up=NOW + timedelta(seconds=give_up),
                 deadline=at(deadline))  # fmt: skip
    assert (got.action, got.outcome, got.next_check) == (action, outcome, at(next_check))


def test_cycles():
    a, b, c, d = (("job", n) for n in "abcd")
    w = ("workflow", "w")
    assert find_cycle(a, {a: [b], b: [c], c: [a]}) == [a, b, c, a]
    assert find_cycle(a, {a: [a]}) == [a, a]
    assert find_cycle(a, {a: [b, d], b: [c], d: [w], w: [a]}) == [a, d, w, a]
    assert find_cycle(a, {a: [b], b: [c], c: [b]}) is None  # a cycle not through a: not ours
    assert find_cycle(a, {a: [b, c], b: [d], c: [d]}) is None  # a diamond


def test_spec_rules_name_the_field():
    spec = parse_model(
        ScheduleSpec,
        {"cron": "0 6 * * *", "depends_on": [{"job": "a", "window": 7200}], "max_wait": "2h"},
    )
    assert spec.depends_on[0].window == "7200s" and spec.max_wait == 7200
    # not part of the fingerprint: adding a dependency keeps the schedule's state
    assert spec.fingerprint() == parse_model(ScheduleSpec, {"cron": "0 6 * * *"}).fingerprint()
    for bad, field in [
        ({"depends_on": [{"job": "a", "window": "32d"}]}, "depends_on.0.window"),
        ({"depends_on": [{"job": "a", "window": True}]}, "depends_on.0.window"),
        ({"depends_on": [{"job": "a"}] * 9}, "depends_on"),
        ({"max_wait": "8d"}, "max_wait"),
        ({"not_before": "24:00"}, "not_before"),
    ]:
        with pytest.raises(InvalidInput) as exc:
            parse_model(ScheduleSpec, {"cron": "* * * * *", **bad})
        assert exc.value.field == field


def test_spec_errors_say_what_is_allowed_in_the_users_units():
    # found walking the docs: the words a window may be, a wall time instead of a regex, and
    # max_wait's bound in days as well as seconds (the user wrote "30d", not 2592000)
    for bad, field, says in [
        ({"depends_on": [{"job": "a", "window": "sometimes"}]}, "depends_on.0.window",
         "'sometimes' is not same_day, previous_slot or a duration"),
        ({"not_before": "25:00"}, "not_before", "'25:00' is not a wall time \"HH:MM\""),
        ({"not_before": "6:00"}, "not_before", "'6:00' is not a wall time"),
        ({"max_wait": "30d"}, "max_wait", "must lie in [0, 7d] (604800 s)"),
        ({"max_wait": -1}, "max_wait", "must lie in [0, 7d]"),
        # a workflow task's depends_on is a list of names; a schedule's is not
        ({"depends_on": ["hourly-etl"]}, "depends_on.0",
         "write {job: hourly-etl} or {workflow: hourly-etl}, not a bare name"),
        ({"depends_on": [7]}, "depends_on.0", "an upstream is {job: NAME | workflow: NAME"),
    ]:  # fmt: skip
        with pytest.raises(InvalidInput) as exc:
            parse_model(ScheduleSpec, {"cron": "* * * * *", **bad})
        assert exc.value.field == field
        assert says in str(exc.value), str(exc.value)
    ok = parse_model(ScheduleSpec, {"cron": "* * * * *", "not_before": "23:59", "max_wait": "7d"})
    assert ok.not_before == "23:59" and ok.max_wait == 7 * 86400


def _job(**schedule) -> Job:
    spec = parse_model(JobSpec, {"name": "down", "command": "true", "schedules": [schedule]})
    return Job(**spec.model_dump(), project="p", created_at=SINCE, updated_at=SINCE,
               active_since=SINCE)  # fmt: skip


def test_held_slots_become_records_of_the_same_plan():
    keys = Keys("/t")
    job = _job(cron="0 6 * * *", depends_on=[{"job": "up"}])
    fp = job.schedules[0].fingerprint()
    ops = RunOps(keys, Snowflake(1), lambda: NOW)
    runs = []
    for day in (9, 10):
        tick = u(f"2026-06-{day:02d}T06:00+00:00")
        run = ops.new_run(job, source="schedule", scheduled_at=tick, schedule=fp)
        runs.append((run, keys.tick("p", "down", fp, int(tick.timestamp() * 1000))))
    plan = JobPlan({}, runs=list(runs))
    state = {"schedules": {fp: {"last_tick": "2026-06-08T06:00:00+00:00"}}}
    assert hold_runs(job, plan, state, keys, job_waiting=0, project_waiting=0) == 2
    assert plan.runs == []
    records = dict(plan.records)
    tick_rec = json.loads(records[runs[0][1]])
    assert tick_rec["waiting"] is True and tick_rec["outcome"] is None and tick_rec["run"] is None
    name = runs[1][1].rsplit("/", 1)[-1]
    waiting = json.loads(records[keys.waiting("p", "down", name)])
    assert waiting["run"]["id"] == runs[1][0].id  # the run to create, minted now
    assert waiting["previous"] == "2026-06-09T06:00:00+00:00"  # previous_slot's start
    # the quota: one more may wait for this job; the second slot ends at once
    plan = JobPlan({}, runs=list(runs))
    assert hold_runs(job, plan, state, keys, job_waiting=0, project_waiting=0, per_job=1) == 1
    ended = json.loads(dict(plan.records)[runs[1][1]])
    assert ended["outcome"] == "skipped_waiting_quota" and "1 slots of this job" in ended["reason"]
    assert ("skipped_waiting_quota", 1) in plan.fates
    # a schedule without depends_on or not_before is not held
    free = _job(cron="0 6 * * *")
    plan = JobPlan(
        {},
        runs=[
            (
                runs[0][0].model_copy(update={"schedule": free.schedules[0].fingerprint()}),
                runs[0][1],
            )
        ],
    )
    assert hold_runs(free, plan, {}, keys, job_waiting=0, project_waiting=0) == 0
    assert len(plan.runs) == 1


def test_the_cli_row_of_a_waiting_slot_says_what_it_waits_for():
    from nodes.cli.jobs import slot_row

    waiting = {
        "tick": "2026-06-10T06:00:00+00:00",
        "waiting": True,
        "open": True,
        "outcome": None,
        "run": None,
        "waiting_for": {
            "depends_on": [
                {"upstream": "hourly", "require": "all_succeeded", "met": False,
                 "slots": {"pending": 3, "failed": 1}},
                {"upstream": "workflow:etl", "require": "finished", "met": True, "slots": {}},
            ],
            "not_before": "2026-06-10T07:00:00+00:00",
            "gate_passed": False,
        },
    }  # fmt: skip
    row = slot_row(waiting)
    assert row[1] == "waiting" and row[2] == "-"
    assert row[3] == (
        "waiting: hourly all_succeeded: 3 pending, 1 failed; workflow:etl finished: met; "
        "not before 2026-06-10T07:00:00+00:00"
    )
    done = {"tick": "t", "outcome": "fired", "run": "r1", "reason": "upstreams met\x1b[2J"}
    assert slot_row(done) == ["t", "fired", "r1", "upstreams met"]  # no terminal controls


@pytest.mark.parametrize(
    ("cron", "zone", "tick", "want"),
    [
        ("0 6 * * *", "UTC", "2026-06-10T06:00+00:00", "2026-06-09T06:00+00:00"),
        ("0 * * * *", "UTC", "2026-06-10T06:00+00:00", "2026-06-10T05:00+00:00"),
        ("*/10 * * * * *", "UTC", "2026-06-10T06:00:00+00:00", "2026-06-10T05:59:50+00:00"),
        # the first of the month: a month back
        ("0 0 1 * *", "UTC", "2026-06-01T00:00+00:00", "2026-05-01T00:00+00:00"),
        # across spring forward: 02:30 Paris does not exist on 29 March (fired at the gap's
        # end, 03:00, by `gap: shift`)
        ("30 2 * * *", "Europe/Paris", "2026-03-30T02:30+02:00", "2026-03-29T03:00+02:00"),
        # nothing before the floor
        ("0 6 * * *", "UTC", "2020-01-01T06:00+00:00", None),
    ],
)
def test_previous_fire_without_a_backwards_search(cron, zone, tick, want):
    from cluster.depends import previous_fire

    sched = parse_schedule(cron=cron, timezone=zone)
    got = previous_fire(sched, u(tick), SINCE)
    assert got == (u(want) if want else None)


@pytest.mark.parametrize(
    ("require", "states", "blocked"),
    [
        ("all_succeeded", ["succeeded", "failed", "pending"], True),  # later slots cannot help
        ("all_succeeded", ["succeeded", "pending"], False),
        ("any_succeeded", ["failed", "failed"], True),  # none left to succeed
        ("any_succeeded", ["failed", "pending"], False),  # the pending one may still succeed
        ("finished", ["failed", "pending"], False),  # failed counts as finished
    ],
)
def test_a_waiter_only_a_rerun_can_release_says_so(require, states, blocked):
    """A slot waiting on a failed upstream slot used to say "N pending, 1 failed" until max_wait
    (up to 7 days) with no hint that nothing but a rerun would ever release it."""
    got = judge(require, "up", W, list(zip(T, states, strict=False)))
    assert got.blocked is blocked and got.doc()["blocked"] is blocked
    end = decide([got], now=T[3], gate=None, give_up=T[3], deadline=None)
    assert ("only a rerun of a failed slot releases it" in end.reason) is blocked
    if blocked:
        from nodes.cli.jobs import slot_row

        row = slot_row({"tick": "t", "waiting": True, "waiting_for": {"depends_on": [got.doc()]}})
        assert row[3].endswith("rerun a failed one to release")
