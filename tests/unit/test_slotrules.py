"""Calendars, blackout windows, freeze: the pure slot decision (cluster.slotrules), as tables."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cluster.blackouts import Window, WindowSpec
from cluster.calendars import Calendar, CalendarSpec
from cluster.errors import InvalidInput
from cluster.models import CalendarRef, JobSpec, ScheduleSpec, parse_model
from cluster.slotrules import CLUSTER, Freeze, SlotRules


def cal(**kw: object) -> Calendar:
    return Calendar(CalendarSpec.model_validate({"name": "c", **kw}))


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


def local(tz: str, *a: int) -> datetime:
    return datetime(*a, tzinfo=ZoneInfo(tz)).astimezone(UTC)


@pytest.mark.parametrize(
    ("spec", "day", "expected"),
    [
        ({"holidays": [{"country": "US"}]}, date(2026, 7, 3), True),  # July 4th observed (Fri)
        ({"holidays": [{"country": "US"}]}, date(2026, 7, 6), False),
        ({"holidays": [{"country": "DE", "subdivision": "BY"}]}, date(2026, 1, 6), True),
        ({"holidays": [{"country": "DE", "subdivision": "BE"}]}, date(2026, 1, 6), False),
        ({"dates": ["2026-12-24"]}, date(2026, 12, 24), True),
        ({"dates": ["2026-12-24"]}, date(2026, 12, 23), False),
        # first business day: Jan 1 2026 is a holiday (Thu), so Jan 2 (Fri)
        ({"holidays": [{"country": "US"}], "business_days": {"nth": 1}}, date(2026, 1, 2), True),
        ({"holidays": [{"country": "US"}], "business_days": {"nth": 1}}, date(2026, 1, 1), False),
        ({"business_days": {"nth": 1}}, date(2026, 1, 1), True),  # no holidays: Thu Jan 1
        # last business day of May 2026: Sun 31, Sat 30, Fri 29; US Memorial Day is Mon 25
        ({"business_days": {"nth": -1}}, date(2026, 5, 29), True),
        ({"business_days": {"nth": -1}}, date(2026, 5, 28), False),
        ({"business_days": {"nth": 3}, "dates": ["2026-03-03"]}, date(2026, 3, 5), True),
        ({"business_days": {}}, date(2026, 3, 7), False),  # Saturday
        ({"business_days": {}, "weekend": ["fri"]}, date(2026, 3, 7), True),
        ({"business_days": {}}, date(2026, 3, 9), True),
    ],
)
def test_calendar_days(spec: dict[str, object], day: date, expected: bool) -> None:
    assert cal(**spec).contains(day) is expected


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"holidays": [{"country": "XX"}]}, "holidays.0.country"),
        ({"holidays": [{"country": "US", "subdivision": "ZZ"}]}, "holidays.0.subdivision"),
        ({}, None),
        ({"business_days": {"nth": 0}}, "business_days.nth"),
        ({"business_days": {"nth": 24}}, "business_days.nth"),
        ({"dates": ["1900-01-01"]}, "dates"),
        ({"dates": ["2026-02-30"]}, "dates.0"),
    ],
)
def test_calendar_refused(spec: dict[str, object], field: str | None) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_model(CalendarSpec, {"name": "c", **spec})
    if field is not None:
        assert info.value.field == field, info.value.message


def win(scope: str = "p", **kw: object) -> Window:
    return Window(WindowSpec.model_validate({"name": "w", **kw}), scope)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
        ({"start": "2026-01-02T00:00:00Z"}, "end"),
        ({"cron": "0 22 * * FRI"}, "duration"),
        ({"cron": "0 22 * * FRI", "duration": "8d"}, "duration"),  # overlaps the next Friday
        ({"cron": "0 0 * * MON,TUE", "duration": "36h"}, "duration"),
        ({"cron": "0 0 * * *", "duration": "0s"}, "duration"),
        ({"cron": "0 0 * * *", "duration": "soon"}, "duration"),
        ({"cron": "61 0 * * *", "duration": "1h"}, "cron"),
        (
            {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "cron": "* * * * *"},
            "start",
        ),
        ({"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "action": "x"}, "action"),
    ],
)
def test_window_refused(spec: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_model(WindowSpec, {"name": "w", **spec})
    assert info.value.field == field, info.value.message


WEEKEND = {"cron": "0 22 * * FRI", "duration": "56h", "timezone": "Europe/Paris"}
DATED = {"start": "2026-03-10T10:00:00Z", "end": "2026-03-10T12:00:00Z"}
HOLS = {"name": "us", "holidays": [{"country": "US"}]}


def rules(
    windows: list[Window] = (),  # type: ignore[assignment]
    freeze: Freeze | None = None,
    cals: list[dict[str, object]] = (),  # type: ignore[assignment]
) -> SlotRules:
    compiled = {c["name"]: Calendar(CalendarSpec.model_validate(c)) for c in cals}
    return SlotRules(
        calendars={"p": compiled},
        windows={
            s: {w.name: w for w in windows if w.scope == s} for s in {w.scope for w in windows}
        },
        freeze=freeze,
    )


@pytest.mark.parametrize(
    ("case", "r", "tick", "tz", "ref", "outcome", "reason", "to"),
    [
        ("plain", rules(), utc(2026, 3, 10, 11), "UTC", None, "fire", None, None),
        (
            "freeze first",
            rules([win(**DATED)], Freeze("release")),
            utc(2026, 3, 10, 11),
            "UTC",
            None,
            "skip",
            "skipped_freeze",
            None,
        ),
        (
            "dated skip",
            rules([win(**DATED)]),
            utc(2026, 3, 10, 11),
            "UTC",
            None,
            "skip",
            "skipped_blackout",
            None,
        ),
        (
            "dated end is open",
            rules([win(**DATED)]),
            utc(2026, 3, 10, 12),
            "UTC",
            None,
            "fire",
            None,
            None,
        ),
        (
            "dated start is closed",
            rules([win(**DATED)]),
            utc(2026, 3, 10, 10),
            "UTC",
            None,
            "skip",
            "skipped_blackout",
            None,
        ),
        (
            "dated defer",
            rules([win(**DATED, action="defer")]),
            utc(2026, 3, 10, 11),
            "UTC",
            None,
            "defer",
            "deferred",
            utc(2026, 3, 10, 12),
        ),
        # Fri 22:00 Paris (21:00 UTC in March before DST) .. Mon 06:00 Paris
        (
            "weekend inside",
            rules([win(**WEEKEND, action="defer")]),
            utc(2026, 3, 7, 12),
            "UTC",
            None,
            "defer",
            "deferred",
            local("Europe/Paris", 2026, 3, 9, 6),
        ),
        (
            "weekend before",
            rules([win(**WEEKEND)]),
            local("Europe/Paris", 2026, 3, 6, 21, 59),
            "UTC",
            None,
            "fire",
            None,
            None,
        ),
        (
            "weekend across DST",
            rules([win(**WEEKEND, action="defer")]),
            utc(2026, 3, 29, 12),
            "UTC",
            None,
            "defer",
            "deferred",
            local("Europe/Paris", 2026, 3, 30, 6) - (utc(2026, 1, 1) - utc(2026, 1, 1, 1)),
        ),
        (
            "skip beats defer",
            rules([win(**DATED, action="defer"), win(name="s", **DATED)]),
            utc(2026, 3, 10, 11),
            "UTC",
            None,
            "skip",
            "skipped_blackout",
            None,
        ),
        (
            "other job",
            rules([win(**DATED, jobs=["other"])]),
            utc(2026, 3, 10, 11),
            "UTC",
            None,
            "fire",
            None,
            None,
        ),
        (
            "tagged",
            rules([win(**DATED, tags=["db"])]),
            utc(2026, 3, 10, 11),
            "UTC",
            None,
            "skip",
            "skipped_blackout",
            None,
        ),
        (
            "cluster window",
            rules([win(CLUSTER, **DATED)]),
            utc(2026, 3, 10, 11),
            "UTC",
            None,
            "skip",
            "skipped_blackout",
            None,
        ),
        # a holiday in the schedule's zone vs UTC: Thanksgiving (2026-11-26) 20:00 in Los
        # Angeles is 04:00 UTC on the 27th, not a US holiday
        (
            "holiday in zone",
            rules(cals=[HOLS]),
            local("America/Los_Angeles", 2026, 11, 26, 20),
            "America/Los_Angeles",
            CalendarRef(skip=["us"]),
            "skip",
            "skipped_calendar",
            None,
        ),
        (
            "same instant in UTC",
            rules(cals=[HOLS]),
            local("America/Los_Angeles", 2026, 11, 26, 20),
            "UTC",
            CalendarRef(skip=["us"]),
            "fire",
            None,
            None,
        ),
        # 2026-12-25 00:30 in Tokyo is still the 24th in UTC
        (
            "Tokyo Christmas",
            rules(cals=[HOLS]),
            local("Asia/Tokyo", 2026, 12, 25, 0, 30),
            "Asia/Tokyo",
            CalendarRef(skip=["us"]),
            "skip",
            "skipped_calendar",
            None,
        ),
        (
            "Tokyo Christmas in UTC",
            rules(cals=[HOLS]),
            local("Asia/Tokyo", 2026, 12, 25, 0, 30),
            "UTC",
            CalendarRef(skip=["us"]),
            "fire",
            None,
            None,
        ),
        (
            "only first bd",
            rules(
                cals=[{"name": "bd1", "holidays": [{"country": "US"}], "business_days": {"nth": 1}}]
            ),
            utc(2026, 1, 2, 9),
            "UTC",
            CalendarRef(only=["bd1"]),
            "fire",
            None,
            None,
        ),
        (
            "only first bd: not it",
            rules(cals=[{"name": "bd1", "business_days": {"nth": 1}}]),
            utc(2026, 1, 5, 9),
            "UTC",
            CalendarRef(only=["bd1"]),
            "skip",
            "skipped_calendar",
            None,
        ),
        (
            "calendar before window",
            rules([win(**DATED)], cals=[{"name": "d", "dates": ["2026-03-10"]}]),
            utc(2026, 3, 10, 11),
            "UTC",
            CalendarRef(skip=["d"]),
            "skip",
            "skipped_calendar",
            None,
        ),
        (
            "a deleted calendar holds nothing",
            rules(),
            utc(2026, 3, 10),
            "UTC",
            CalendarRef(skip=["gone"]),
            "fire",
            None,
            None,
        ),
    ],
)
def test_decide(
    case: str,
    r: SlotRules,
    tick: datetime,
    tz: str,
    ref: CalendarRef | None,
    outcome: str,
    reason: str | None,
    to: datetime | None,
) -> None:
    d = r.for_job("p", "job", ["db"]).decide(tick, tz, ref)
    assert (d.outcome, d.reason, d.to) == (outcome, reason, to), case


def test_defer_chains_adjacent_windows() -> None:
    a = win(name="a", start="2026-03-10T10:00:00Z", end="2026-03-10T12:00:00Z", action="defer")
    b = win(name="b", start="2026-03-10T11:30:00Z", end="2026-03-10T14:00:00Z", action="defer")
    d = rules([a, b]).for_job("p", "j", []).decide(utc(2026, 3, 10, 10, 30), "UTC", None)
    assert d.to == utc(2026, 3, 10, 14)


def test_deferred_run_meets_a_skip_window_or_freeze() -> None:
    skip = win(name="s", start="2026-03-10T12:00:00Z", end="2026-03-10T13:00:00Z")
    assert rules([skip]).for_job("p", "j", []).decide_deferred(utc(2026, 3, 10, 12)).reason == (
        "skipped_blackout"
    )
    assert (
        rules([], Freeze("x")).for_job("p", "j", []).decide_deferred(utc(2026, 3, 10, 12)).reason
        == "skipped_freeze"
    )
    assert rules().for_job("p", "j", []).decide_deferred(utc(2026, 3, 10, 12)).outcome == "fire"


def test_lord_howe_half_hour_shift_window() -> None:
    # Lord Howe moves its clocks back by 30 minutes (2026-04-05 02:00 -> 01:30): a daily
    # window from 01:00 lasting 1 h is one hour of elapsed time, so it holds the first 01:45
    # and not the second one (75 minutes after its start)
    w = win(cron="0 1 * * *", duration="1h", timezone="Australia/Lord_Howe")
    r = rules([w]).for_job("p", "j", [])
    lh = ZoneInfo("Australia/Lord_Howe")
    first = datetime(2026, 4, 5, 1, 45, fold=0, tzinfo=lh).astimezone(UTC)
    second = datetime(2026, 4, 5, 1, 45, fold=1, tzinfo=lh).astimezone(UTC)
    assert (second - first).total_seconds() == 1800
    assert r.decide(first, "UTC", None).reason == "skipped_blackout"
    assert r.decide(second, "UTC", None).outcome == "fire"
    assert (
        r.decide(datetime(2026, 4, 5, 1, 29, fold=1, tzinfo=lh).astimezone(UTC), "UTC", None).reason
        == "skipped_blackout"
    )


def test_schedule_takes_a_calendar_and_keeps_its_fingerprint() -> None:
    a = ScheduleSpec(cron="0 9 * * *")
    b = ScheduleSpec(cron="0 9 * * *", calendar=CalendarRef(skip=["us"]))
    assert a.fingerprint() == b.fingerprint()
    with pytest.raises(InvalidInput) as info:
        parse_model(ScheduleSpec, {"cron": "0 9 * * *", "calendar": {"skip": ["Bad Name"]}})
    assert info.value.field == "calendar.skip.0"


def test_workflow_schedules_refuse_a_calendar_they_would_ignore() -> None:
    from cluster.workflows import WorkflowSpec

    doc = {
        "name": "w",
        "tasks": [{"name": "a", "command": "true"}],
        "schedules": [{"cron": "* * * * *", "calendar": {"skip": ["x"]}}],
    }
    with pytest.raises(InvalidInput) as info:
        parse_model(WorkflowSpec, doc)
    assert info.value.field == "schedules.0.calendar"


def test_window_answers_the_same_in_any_order_of_questions() -> None:
    import random

    spec = {"cron": "0 22 * * FRI", "duration": "56h", "timezone": "Europe/Paris"}
    cached = win(**spec)
    rng = random.Random(7)
    base = utc(2026, 3, 1)
    instants = sorted(base + timedelta(minutes=rng.randrange(60 * 24 * 60)) for _ in range(300))
    instants += rng.sample(instants, 100)  # then out of order
    for t in instants:
        assert cached.holding(t) == win(**spec).holding(t), t


def test_the_examples_of_docs_calendars_md_are_valid() -> None:
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "calendars.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    seen = {"calendar": 0, "window": 0, "job": 0}
    for block in blocks:
        for doc in yaml.safe_load_all(block):
            if "schedules" in doc:
                parse_model(JobSpec, {"name": "j", "command": "true", **doc})
                seen["job"] += 1
            elif "start" in doc or "cron" in doc:
                parse_model(WindowSpec, doc)
                seen["window"] += 1
            else:
                parse_model(CalendarSpec, doc)
                seen["calendar"] += 1
    assert seen == {"calendar": 3, "window": 2, "job": 1}
