"""Schedules, cron expressions: fields, descriptors, impossible dates, @every, H and invalid
input, with plain values.

One-shot times, DST and tick windows are in test_cron_times.py."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from cluster.cron import (
    next_times,
    parse_duration,
    parse_schedule,
    ticks_between,
    validate_timezone,
)
from cluster.errors import InvalidSchedule
from tests.cron_helpers import upcoming, utc

# --------------------------------------------------------------------------- field matching

T0 = utc(2026, 5, 17, 12, 34, 56)  # a Sunday


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        # 5 fields
        ("* * * * *", T0, ["2026-05-17T12:35:00", "2026-05-17T12:36:00"]),
        ("0 3 * * *", T0, ["2026-05-18T03:00:00", "2026-05-19T03:00:00"]),
        ("30 12 * * *", utc(2026, 5, 17, 12, 30), ["2026-05-18T12:30:00", "2026-05-19T12:30:00"]),
        ("0 0 1 * *", T0, ["2026-06-01T00:00:00", "2026-07-01T00:00:00"]),
        ("0 0 31 * *", T0, ["2026-05-31T00:00:00", "2026-07-31T00:00:00"]),
        ("59 23 31 12 *", T0, ["2026-12-31T23:59:00", "2027-12-31T23:59:00"]),
        # 6 fields, seconds first
        ("* * * * * *", T0, ["2026-05-17T12:34:57", "2026-05-17T12:34:58"]),
        ("*/20 * * * * *", T0, ["2026-05-17T12:35:00", "2026-05-17T12:35:20"]),
        ("30 0 9 * * *", T0, ["2026-05-18T09:00:30", "2026-05-19T09:00:30"]),
        ("0 0 0 1 1 ?", T0, ["2027-01-01T00:00:00", "2028-01-01T00:00:00"]),
        # steps, ranges, lists
        ("*/15 * * * *", T0, ["2026-05-17T12:45:00", "2026-05-17T13:00:00", "2026-05-17T13:15:00"]),
        (
            "10-50/20 * * * *",
            T0,
            ["2026-05-17T12:50:00", "2026-05-17T13:10:00", "2026-05-17T13:30:00"],
        ),
        (
            "40/10 * * * *",
            T0,
            ["2026-05-17T12:40:00", "2026-05-17T12:50:00", "2026-05-17T13:40:00"],
        ),
        (
            "5,35 9-10 * * *",
            T0,
            ["2026-05-18T09:05:00", "2026-05-18T09:35:00", "2026-05-18T10:05:00"],
        ),
        (
            "0 0 1-3,15 * *",
            T0,
            ["2026-06-01T00:00:00", "2026-06-02T00:00:00", "2026-06-03T00:00:00"],
        ),
        ("0 */6 * * *", T0, ["2026-05-17T18:00:00", "2026-05-18T00:00:00"]),
        # names, any case
        ("0 0 1 JAN,jul *", T0, ["2026-07-01T00:00:00", "2027-01-01T00:00:00"]),
        ("0 9 * * MON-FRI", T0, ["2026-05-18T09:00:00", "2026-05-19T09:00:00"]),
        ("0 9 * * sat,Sun", T0, ["2026-05-23T09:00:00", "2026-05-24T09:00:00"]),
        ("0 0 * Feb-Mar mon", T0, ["2027-02-01T00:00:00", "2027-02-08T00:00:00"]),
        # day-of-week 0 and 7 are both Sunday
        ("0 0 * * 0", T0, ["2026-05-24T00:00:00", "2026-05-31T00:00:00"]),
        ("0 0 * * 7", T0, ["2026-05-24T00:00:00", "2026-05-31T00:00:00"]),
        ("0 0 * * 5-7", T0, ["2026-05-22T00:00:00", "2026-05-23T00:00:00", "2026-05-24T00:00:00"]),
        # ? is * in the day fields
        ("0 0 ? * MON", T0, ["2026-05-18T00:00:00", "2026-05-25T00:00:00"]),
        ("0 0 1 * ?", T0, ["2026-06-01T00:00:00", "2026-07-01T00:00:00"]),
    ],
)
def test_fields(cron: str, after: datetime, expected: list[str]) -> None:
    assert upcoming(cron, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        # Both restricted: either matches (the 13th OR any Friday).
        (
            "0 0 13 * FRI",
            [
                "2026-05-22T00:00:00",
                "2026-05-29T00:00:00",
                "2026-06-05T00:00:00",
                "2026-06-12T00:00:00",
                "2026-06-13T00:00:00",
            ],
        ),
        (
            "0 0 1,15 * MON",
            [
                "2026-05-18T00:00:00",
                "2026-05-25T00:00:00",
                "2026-06-01T00:00:00",
                "2026-06-08T00:00:00",
                "2026-06-15T00:00:00",
            ],
        ),
        # One side unrestricted: the other one decides.
        ("0 0 13 * *", ["2026-06-13T00:00:00", "2026-07-13T00:00:00"]),
        ("0 0 * * FRI", ["2026-05-22T00:00:00", "2026-05-29T00:00:00"]),
        ("0 0 ? * FRI", ["2026-05-22T00:00:00", "2026-05-29T00:00:00"]),
    ],
)
def test_day_of_month_or_day_of_week(cron: str, expected: list[str]) -> None:
    assert upcoming(cron, T0, len(expected)) == expected


@pytest.mark.parametrize(
    ("descriptor", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@minutely", "* * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_descriptors(descriptor: str, equivalent: str) -> None:
    assert upcoming(descriptor, T0, 3) == upcoming(equivalent, T0, 3)
    assert upcoming(descriptor, T0, 3, tz="Asia/Tokyo") == upcoming(equivalent, T0, 3, "Asia/Tokyo")


def test_descriptor_values() -> None:
    assert upcoming("@weekly", T0, 1) == ["2026-05-24T00:00:00"]
    assert upcoming("@hourly", T0, 1) == ["2026-05-17T13:00:00"]
    assert upcoming("@yearly", T0, 1) == ["2027-01-01T00:00:00"]


def test_results_are_aware_utc_whole_seconds() -> None:
    for cron in ("*/7 * * * * *", "0 9 * * *", "@every 90s"):
        for t in next_times(parse_schedule(cron=cron, timezone="Asia/Kolkata"), T0, 5):
            assert t.tzinfo is UTC
            assert t.microsecond == 0


def test_next_after_is_strict_and_accepts_any_offset() -> None:
    sched = parse_schedule(cron="0 * * * *")
    assert sched.next_after(utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 11, 0)
    assert sched.next_after(utc(2026, 1, 1, 9, 59, 59, 999999)) == utc(2026, 1, 1, 10, 0)
    plus2 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert sched.next_after(plus2) == utc(2026, 1, 1, 11, 0)


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_schedule(cron="* * * * *").next_after(datetime(2026, 1, 1))


# --------------------------------------------------------------------------- impossible dates


@pytest.mark.parametrize(
    "cron", ["59 23 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 0 30-31 2 *"]
)
def test_impossible_schedule_never_fires(cron: str) -> None:
    sched = parse_schedule(cron=cron, timezone="Europe/Paris")
    assert sched.next_after(T0) is None
    assert ticks_between(sched, T0, T0 + timedelta(days=3650), 10) == []
    assert next_times(sched, T0, 3) == []


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (T0, ["2028-02-29T00:00:00", "2032-02-29T00:00:00"]),
        (utc(2028, 2, 29), ["2032-02-29T00:00:00"]),
        (utc(2096, 3, 1), ["2104-02-29T00:00:00"]),  # 2100 is not a leap year
    ],
)
def test_leap_day(after: datetime, expected: list[str]) -> None:
    assert upcoming("0 0 29 2 *", after, len(expected)) == expected


def test_possible_only_in_some_months() -> None:
    assert upcoming("0 0 31 2,4,5 *", T0, 2) == ["2026-05-31T00:00:00", "2027-05-31T00:00:00"]
    # Feb 29 when it is a Monday too (OR rule: any Monday of February, or Feb 29).
    assert upcoming("0 0 29 2 MON", utc(2028, 2, 27), 2) == [
        "2028-02-28T00:00:00",
        "2028-02-29T00:00:00",
    ]


# --------------------------------------------------------------------------- @every


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        ("@every 10s", utc(2026, 1, 1, 0, 0, 7), ["2026-01-01T00:00:10", "2026-01-01T00:00:20"]),
        ("@every 10s", utc(2026, 1, 1, 0, 0, 10), ["2026-01-01T00:00:20"]),
        ("@every 1m", utc(2026, 1, 1, 0, 0, 0, 1), ["2026-01-01T00:01:00"]),
        # 1h30m = 5400 s; 2026-01-01T00:00Z is 20454 days = 327264 intervals after the epoch.
        ("@every 1h30m", utc(2026, 1, 1, 0, 10), ["2026-01-01T01:30:00", "2026-01-01T03:00:00"]),
        ("@every 7s", utc(1970, 1, 1, 0, 0, 0), ["1970-01-01T00:00:07", "1970-01-01T00:00:14"]),
        # 1767225600 s = 7 * 252460800: midnight is on the 7 s grid
        ("@every 7s", utc(2026, 1, 1), ["2026-01-01T00:00:07", "2026-01-01T00:00:14"]),
        ("@every 7s", utc(2026, 1, 1, 0, 0, 1), ["2026-01-01T00:00:07"]),
        ("@every 11m", utc(2026, 1, 1), ["2026-01-01T00:05:00", "2026-01-01T00:16:00"]),
        ("@every 1d", T0, ["2026-05-18T00:00:00"]),
        ("@EVERY   45", T0, ["2026-05-17T12:35:15"]),
    ],
)
def test_every_grid(cron: str, after: datetime, expected: list[str]) -> None:
    assert upcoming(cron, after, len(expected)) == expected


def test_every_ignores_time_zone() -> None:
    a = upcoming("@every 1h30m", T0, 5, tz="UTC")
    assert a == upcoming("@every 1h30m", T0, 5, tz="Asia/Kolkata")
    assert a == upcoming("@every 1h30m", T0, 5, tz="America/New_York")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h30m10s", 5410.0),
        ("1h 30m", 5400.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("45", 45.0),
        ("2.5", 2.5),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10x", "", "h", "-5s", "1h-30m", "5 m s", "1,5s", "ten"])
def test_parse_duration_invalid(text: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_duration(text)
    assert info.value.field == "every"
    assert info.value.message.startswith("every: invalid duration")


# --------------------------------------------------------------------------- H


MIDNIGHT = utc(2026, 1, 1) - timedelta(seconds=1)


def hashed_values(cron: str, key: str) -> list[str]:
    return upcoming(cron, utc(2026, 1, 1), 3, key=key)


def test_hash_is_stable_and_in_range() -> None:
    for key in ("a/b", "project/job", ""):
        first = hashed_values("H H * * *", key)
        assert first == hashed_values("H H * * *", key)
        # daily at the same hashed time
        times = [datetime.fromisoformat(t) for t in first]
        assert times[1] - times[0] == timedelta(days=1)
    for i in range(50):
        sched = parse_schedule(cron="H H(2-4) H * *", hash_key=f"p/job-{i}")
        t = sched.next_after(utc(2026, 1, 1))
        assert t is not None
        assert 2 <= t.hour <= 4
        assert 1 <= t.day <= 28


def test_hash_spreads_keys() -> None:
    minutes = set()
    for i in range(40):
        t = parse_schedule(cron="H * * * *", hash_key=f"p/job-{i}").next_after(utc(2026, 1, 1))
        assert t is not None
        minutes.add(t.minute)
    assert len(minutes) > 10


def test_hash_same_field_in_5_and_6_fields() -> None:
    five = upcoming("H H * * *", utc(2026, 1, 1), 2, key="k")
    six = upcoming("0 H H * * *", utc(2026, 1, 1), 2, key="k")
    assert five == six


def test_hash_range() -> None:
    for i in range(30):
        t = parse_schedule(cron="H(10-14) * * * *", hash_key=str(i)).next_after(utc(2026, 1, 1))
        assert t is not None
        assert 10 <= t.minute <= 14
    values = {
        parse_schedule(cron="0 H(1-3) * * *", hash_key=str(i)).next_after(utc(2026, 1, 1)).hour  # type: ignore[union-attr]
        for i in range(30)
    }
    assert values == {1, 2, 3}


@pytest.mark.parametrize("key", ["a", "b", "c", "d", "e"])
def test_hash_step(key: str) -> None:
    ticks = [datetime.fromisoformat(t) for t in upcoming("H/15 * * * *", MIDNIGHT, 8, key=key)]
    offset = ticks[0].minute
    assert offset < 15
    assert [t.minute for t in ticks[:4]] == [offset, offset + 15, offset + 30, offset + 45]
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(ticks))

    ranged = [
        datetime.fromisoformat(t)
        for t in upcoming("H(30-59)/10 * * * *", utc(2026, 1, 1), 6, key=key)
    ]
    first = ranged[0].minute
    assert 30 <= first < 40
    assert [t.minute for t in ranged[:3]] == [first, first + 10, first + 20]


def test_hash_step_offsets_differ_between_keys() -> None:
    offsets = {
        parse_schedule(cron="H/30 * * * * *", hash_key=f"k{i}").next_after(MIDNIGHT).second  # type: ignore[union-attr]
        for i in range(40)
    }
    assert len(offsets) > 5
    assert all(o < 30 for o in offsets)


# --------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("61 * * * *", ["minute", "'61'", "0-59"]),
        ("0 24 * * *", ["hour", "'24'", "0-23"]),
        ("0 0 * * 8", ["day-of-week", "'8'"]),
        ("0 0 1 13 *", ["month", "'13'", "1-12"]),
        ("0 0 0 * *", ["day-of-month", "'0'", "1-31"]),
        ("60 * * * * *", ["second", "'60'"]),
        ("*/0 * * * *", ["minute", "*/0", "step"]),
        ("0 */99 * * *", ["hour", "step"]),
        ("0 */x * * *", ["hour", "step"]),
        ("-1 * * * *", ["minute", "'-1'"]),
        ("1,,2 * * * *", ["minute", "empty"]),
        ("? * * * *", ["minute", "?"]),
        ("0 0 * * MON-FOO", ["day-of-week", "FOO"]),
        ("0 0 * JANUARY *", ["month", "JANUARY"]),
        ("0 0 L * *", ["day-of-month", "'L'"]),
        ("H(50-70) * * * *", ["minute", "70"]),
        ("H(40-10) * * * *", ["minute", "start"]),
        ("a b c d e", ["minute", "'a'"]),
        ("0 0 * * 7/2", ["day-of-week", "7/2"]),
        ("1 2 3 4", ["expected 5 or 6 fields, got 4"]),
        ("1 2 3 4 5 6 7", ["expected 5 or 6 fields, got 7"]),
        ("garbage", ["expected 5 or 6 fields, got 1"]),
        ("", ["empty"]),
        ("@reboot", ["@reboot"]),
        ("@fortnightly", ["@fortnightly"]),
    ],
)
def test_invalid_cron(cron: str, words: list[str]) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_schedule(cron=cron)
    assert info.value.field == "cron"
    assert info.value.message.startswith("cron: ")
    for word in words:
        assert word in info.value.message


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("@every 10x", ["invalid duration", "'10x'"]),
        ("@every", ["invalid duration"]),
        ("@every 500ms", ["shorter than 1 second"]),
        ("@every 0s", ["shorter than 1 second"]),
        ("@every 1.5s", ["whole number of seconds"]),
    ],
)
def test_invalid_every(cron: str, words: list[str]) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_schedule(cron=cron)
    assert info.value.field == "every"
    assert info.value.message.startswith("every: ")
    for word in words:
        assert word in info.value.message


@pytest.mark.parametrize("name", ["Mars/Base", "", "America", "../etc/passwd", "utc"])
def test_unknown_time_zone(name: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_schedule(cron="* * * * *", timezone=name)
    assert info.value.field == "timezone"
    # then the fix: the zone meant, or the form of a name (D506, tests/unit/test_typo_hints.py)
    assert info.value.message.startswith(f"timezone: unknown time zone {name!r}; ")
    with pytest.raises(InvalidSchedule):
        validate_timezone(name)


def test_validate_timezone() -> None:
    assert validate_timezone("Europe/Paris") == ZoneInfo("Europe/Paris")
    assert isinstance(InvalidSchedule("x"), ValueError)


def test_exactly_one_of_cron_and_at() -> None:
    for kwargs in ({}, {"cron": "* * * * *", "at": "2026-01-01T00:00:00Z"}):
        with pytest.raises(InvalidSchedule) as info:
            parse_schedule(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == "cron"
