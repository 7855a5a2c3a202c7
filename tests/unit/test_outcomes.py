"""Slot outcomes and deadline decisions (cluster/outcomes.py): pure, with an injected ``now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cluster import outcomes
from cluster.models import JobSpec, parse_model
from cluster.outcomes import (
    RunView,
    SlotDeadlines,
    decide,
    decide_freshness,
    effective_deadlines,
    outcome_of_record,
    slot_deadlines,
    summarize,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


START = SlotDeadlines.of(T0, 60, 0)
BOTH = SlotDeadlines.of(T0, 60, 600)
SUCCEED = SlotDeadlines.of(T0, 0, 600)


@pytest.mark.parametrize(
    ("slot", "run", "now", "outcome", "reason_has", "next_check"),
    [
        # nothing started yet: wait for the first deadline, then it is missed whatever the cause
        (START, None, at(10), None, "", at(60)),
        (START, None, at(60), "deadline_missed", "no run was created", None),
        (START, RunView("r1", "pending"), at(59.9), None, "", at(60)),
        (START, RunView("r1", "pending"), at(61), "deadline_missed", "run r1 is pending", None),
        (
            START,
            RunView("r1", "skipped", error="skipped by overlap policy 'forbid'"),
            at(61),
            "deadline_missed",
            "skipped by overlap",
            None,
        ),
        (SUCCEED, RunView("r1", "pending"), at(300), None, "", at(600)),
        (
            SUCCEED,
            RunView("r1", "pending"),
            at(600),
            "deadline_missed",
            "not succeeded within",
            None,
        ),
        # started within start_within, no succeed deadline: fired at once
        (START, RunView("r1", "running", at(5)), at(6), "fired", "started 5 s", None),
        # a start seen only after the deadline (e.g. a leader change in between): late
        (START, RunView("r1", "running", at(90)), at(95), "late", "start_within is 60 s", None),
        # succeed_within: wait for the run's end
        (BOTH, RunView("r1", "running", at(5)), at(100), None, "", at(600)),
        (BOTH, RunView("r1", "succeeded", at(5), at(200)), at(201), "fired", "succeeded", None),
        (BOTH, RunView("r1", "failed", at(5), at(20)), at(21), "deadline_missed", "failed", None),
        (BOTH, RunView("r1", "running", at(5)), at(600), "deadline_missed", "is running", None),
        (
            BOTH,
            RunView("r1", "succeeded", at(5), at(700)),
            at(701),
            "deadline_missed",
            "succeeded 700 s",
            None,
        ),
        (BOTH, RunView("r1", "succeeded", at(70), at(80)), at(81), "late", "start_within", None),
        # a retry waiting in the queue has started (its first attempt): it waits for success
        (BOTH, RunView("r1", "pending", at(5)), at(100), None, "", at(600)),
        (BOTH, RunView("r1", "pending", at(5)), at(600), "deadline_missed", "r1 is pending", None),
        # a catch-up slot that met its deadlines
        (
            SlotDeadlines.of(T0, 60, 0, source="catch-up"),
            RunView("r1", "running", at(1)),
            at(2),
            "caught_up",
            "",
            None,
        ),
    ],
)
def test_decide(slot, run, now, outcome, reason_has, next_check):
    verdict = decide(slot, run, now)
    assert verdict.outcome == outcome
    assert reason_has in verdict.reason
    assert verdict.next_check == next_check
    if outcome is not None:
        assert outcome in outcomes.OUTCOMES


def test_lateness_is_start_minus_instant():
    assert decide(START, RunView("r", "running", at(12.5)), at(13)).lateness == 12.5
    assert decide(START, None, at(60)).lateness is None


def test_a_pending_run_at_the_deadline_is_missed_exactly_then_not_before():
    run = RunView("r", "pending")
    before = decide(BOTH, run, at(60) - timedelta(microseconds=1))
    assert before.outcome is None and before.next_check == at(60)
    assert decide(BOTH, run, at(60)).outcome == "deadline_missed"


@pytest.mark.parametrize(
    ("since", "last", "now", "stale", "outcome", "next_check"),
    [
        (at(0), None, at(10), False, None, at(3600)),
        (at(0), at(5), at(10), False, "fired", None),
        (at(0), at(-5), at(3600), False, "deadline_missed", None),
        (at(0), None, at(3600), False, "deadline_missed", None),
        # a stale period has no deadline: it waits for the next success
        (at(3600), None, at(99999), True, None, None),
        (at(3600), at(4000), at(4001), True, "fired", None),
    ],
)
def test_freshness(since, last, now, stale, outcome, next_check):
    due = since + timedelta(seconds=3600)
    verdict = decide_freshness(due, since, last, now, stale=stale)
    assert verdict.outcome == outcome
    assert verdict.next_check == next_check
    if outcome == "deadline_missed":
        assert "no successful run within 3600 s" in verdict.reason


def test_schedule_deadlines_win_field_by_field():
    assert effective_deadlines((60, 600), None) == (60, 600)
    assert effective_deadlines((60, 600), (0, 900)) == (60, 900)
    assert effective_deadlines((0, 0), (30, 0)) == (30, 0)
    job = parse_model(
        JobSpec,
        {
            "name": "j",
            "command": "true",
            "deadlines": {"start_within": "1m"},
            "schedules": [
                {"cron": "* * * * *"},
                {"cron": "0 * * * *", "deadlines": {"succeed_within": "2h"}},
                {"cron": "5 * * * *", "enabled": False},
            ],
        },
    )
    got = slot_deadlines(job)
    fps = [s.fingerprint() for s in job.schedules]
    assert got == {fps[0]: (60, 0), fps[1]: (60, 7200)}
    assert slot_deadlines(parse_model(JobSpec, {"name": "j", "command": "x"})) == {}


def test_fates_of_old_records_map_to_outcomes():
    assert outcome_of_record({"fate": "schedule"}) == "fired"
    assert outcome_of_record({"fate": "catch-up"}) == "caught_up"
    assert outcome_of_record({"fate": "skipped"}) == "skipped_overlap"
    assert outcome_of_record({"fate": "backfill"}) == "backfilled"
    assert outcome_of_record({"fate": "schedule", "outcome": None}) is None  # open
    assert outcome_of_record({"fate": "schedule", "outcome": "late"}) == "late"


def test_summary_counts_ran_of_settled_slots_and_lists_late_ones():
    records = [
        {"tick": "t6", "outcome": None},
        {"tick": "t5", "outcome": "deadline_missed", "reason": "not started"},
        {"tick": "t4", "outcome": "late"},
        {"tick": "t3", "fate": "schedule"},
        {"tick": "t2", "outcome": "skipped_overlap"},
        {"tick": "t1", "outcome": "fired"},
    ]
    got = summarize(records)
    assert (got["slots"], got["ran"], got["open"]) == (5, 3, 1)
    assert [r["tick"] for r in got["late"]] == ["t5", "t4"]
    assert got["outcomes"] == {"deadline_missed": 1, "late": 1, "fired": 2, "skipped_overlap": 1}
    assert len(summarize(records, late_limit=1)["late"]) == 1


def test_the_vocabulary_is_extendable_once():
    outcomes.define("fired", outcomes.FIRED.description, ran=True)  # same definition: fine
    with pytest.raises(ValueError, match="already defined"):
        outcomes.define("fired", "something else")
    for name in ("skipped_calendar", "skipped_blackout", "deferred", "missed_outage"):
        assert name in outcomes.OUTCOMES


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"deadlines": {"start_within": -1}}, "deadlines.start_within"),
        ({"deadlines": {"start_within": "soon"}}, "deadlines.start_within"),
        ({"deadlines": {"start_within": 400 * 86400}}, "deadlines.start_within"),
        ({"deadlines": {"start_within": 600, "succeed_within": 60}}, "deadlines.succeed_within"),
        ({"deadlines": {"finish_within": 60}}, "deadlines.finish_within"),
        ({"expected_every": "10s"}, "expected_every"),
        ({"expected_every": "1h", "schedules": [{"cron": "* * * * *"}]}, "expected_every"),
        (
            {"schedules": [{"cron": "* * * * *", "deadlines": {"succeed_within": "x"}}]},
            "schedules.0.deadlines.succeed_within",
        ),
    ],
)
def test_bad_deadlines_name_the_field(doc, field):
    from cluster.errors import InvalidInput

    with pytest.raises(InvalidInput) as err:
        parse_model(JobSpec, {"name": "j", "command": "true", **doc})
    assert err.value.field == field


def test_durations_read_units():
    job = parse_model(
        JobSpec,
        {"name": "j", "command": "x", "deadlines": {"start_within": "90s", "succeed_within": "2h"}},
    )
    assert job.deadlines is not None and job.deadlines.pair() == (90, 7200)
    assert (
        parse_model(JobSpec, {"name": "j", "command": "x", "expected_every": "1d"}).expected_every
        == 86400
    )
