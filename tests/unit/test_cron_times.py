"""Schedules, fire times: one-shot `at` times, DST transitions, ticks_between windows and
next_times counts, with plain values."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from cluster.cron import (
    next_times,
    parse_schedule,
    ticks_between,
)
from cluster.errors import InvalidSchedule
from tests.cron_helpers import upcoming, utc

# --------------------------------------------------------------------------- one-shot


def test_at_future_and_past() -> None:
    sched = parse_schedule(at="2026-12-24T18:00:00+01:00")
    assert sched.next_after(utc(2026, 12, 24, 16, 59, 59)) == utc(2026, 12, 24, 17, 0)
    assert sched.next_after(utc(2026, 12, 24, 17, 0)) is None
    assert sched.next_after(utc(2027, 1, 1)) is None
    assert next_times(sched, utc(2026, 1, 1), 5) == [utc(2026, 12, 24, 17, 0)]


@pytest.mark.parametrize(
    ("at", "tz", "expected"),
    [
        ("2026-12-24T18:00:00Z", "Asia/Tokyo", utc(2026, 12, 24, 18, 0)),
        ("2026-12-24T18:00:00", "UTC", utc(2026, 12, 24, 18, 0)),
        ("2026-12-24T18:00:00", "Europe/Paris", utc(2026, 12, 24, 17, 0)),
        ("2026-07-01T09:30:00", "America/New_York", utc(2026, 7, 1, 13, 30)),
        ("2026-07-01T09:30:00.750", "UTC", utc(2026, 7, 1, 9, 30)),
        # in the spring-forward gap: the end of the gap; in the repeated hour: the first one
        ("2026-03-29T02:30:00", "Europe/Paris", utc(2026, 3, 29, 1, 0)),
        ("2026-10-25T02:30:00", "Europe/Paris", utc(2026, 10, 25, 0, 30)),
        (datetime(2026, 7, 1, 9, 30), "America/New_York", utc(2026, 7, 1, 13, 30)),
        (datetime(2026, 7, 1, 9, 30, tzinfo=UTC), "America/New_York", utc(2026, 7, 1, 9, 30)),
    ],
)
def test_at_values(at: str | datetime, tz: str, expected: datetime) -> None:
    got = parse_schedule(at=at, timezone=tz).next_after(utc(2000, 1, 1))
    assert got == expected
    assert got is not None and got.tzinfo is UTC


def test_at_invalid() -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_schedule(at="next tuesday")
    assert info.value.field == "at"
    assert info.value.message.startswith("at: ")


# --------------------------------------------------------------------------- DST

# Europe/Paris 2026: clocks go 02:00 CET -> 03:00 CEST on Mar 29 (01:00 UTC) and
# 03:00 CEST -> 02:00 CET on Oct 25 (01:00 UTC), so 02:00-02:59 happens twice.
# America/New_York 2026: 02:00 EST -> 03:00 EDT on Mar 8 (07:00 UTC) and
# 02:00 EDT -> 01:00 EST on Nov 1 (06:00 UTC), so 01:00-01:59 happens twice.
DST_CASES = [
    # --- Paris, spring forward: 02:xx does not exist
    ("Europe/Paris", "30 2 * * *", utc(2026, 3, 28, 12),
     ["2026-03-29T01:00:00", "2026-03-30T00:30:00"]),  # 03:00 CEST, then 02:30 CEST
    ("Europe/Paris", "*/15 * * * *", utc(2026, 3, 29, 0, 30),
     ["2026-03-29T00:45:00", "2026-03-29T01:00:00", "2026-03-29T01:15:00"]),
    ("Europe/Paris", "0 * * * *", utc(2026, 3, 28, 23, 30),
     ["2026-03-29T00:00:00", "2026-03-29T01:00:00", "2026-03-29T02:00:00"]),
    ("Europe/Paris", "0 */2 * * *", utc(2026, 3, 28, 22, 30),
     ["2026-03-28T23:00:00", "2026-03-29T01:00:00", "2026-03-29T02:00:00"]),
    ("Europe/Paris", "0 30 2 * * *", utc(2026, 3, 29, 0, 59, 59),
     ["2026-03-29T01:00:00", "2026-03-30T00:30:00"]),
    # --- Paris, fall back: 02:xx happens twice
    ("Europe/Paris", "30 2 * * *", utc(2026, 10, 24, 12),
     ["2026-10-25T00:30:00", "2026-10-26T01:30:00"]),  # only the first 02:30 (CEST)
    ("Europe/Paris", "*/15 * * * *", utc(2026, 10, 24, 23, 30),
     ["2026-10-24T23:45:00", "2026-10-25T00:00:00", "2026-10-25T00:15:00", "2026-10-25T00:30:00",
      "2026-10-25T00:45:00", "2026-10-25T01:00:00", "2026-10-25T01:15:00", "2026-10-25T01:30:00",
      "2026-10-25T01:45:00", "2026-10-25T02:00:00"]),
    ("Europe/Paris", "0 * * * *", utc(2026, 10, 24, 22, 30),
     ["2026-10-24T23:00:00", "2026-10-25T00:00:00", "2026-10-25T01:00:00", "2026-10-25T02:00:00"]),
    ("Europe/Paris", "*/30 2 * * *", utc(2026, 10, 24, 12),  # fixed hour: first pass only
     ["2026-10-25T00:00:00", "2026-10-25T00:30:00", "2026-10-26T01:00:00"]),
    # --- New York, spring forward: 02:xx does not exist
    ("America/New_York", "30 2 * * *", utc(2026, 3, 7, 12),
     ["2026-03-08T07:00:00", "2026-03-09T06:30:00"]),  # 03:00 EDT, then 02:30 EDT
    ("America/New_York", "*/15 * * * *", utc(2026, 3, 8, 6, 30),
     ["2026-03-08T06:45:00", "2026-03-08T07:00:00", "2026-03-08T07:15:00"]),
    ("America/New_York", "0 * * * *", utc(2026, 3, 8, 5, 30),
     ["2026-03-08T06:00:00", "2026-03-08T07:00:00", "2026-03-08T08:00:00"]),
    # --- New York, fall back: 01:xx happens twice
    ("America/New_York", "30 1 * * *", utc(2026, 10, 31, 12),
     ["2026-11-01T05:30:00", "2026-11-02T06:30:00"]),  # only the first 01:30 (EDT)
    ("America/New_York", "30 2 * * *", utc(2026, 10, 31, 12),
     ["2026-11-01T07:30:00", "2026-11-02T07:30:00"]),  # 02:30 EST exists once
    ("America/New_York", "*/15 * * * *", utc(2026, 11, 1, 4, 30),
     ["2026-11-01T04:45:00", "2026-11-01T05:00:00", "2026-11-01T05:15:00", "2026-11-01T05:30:00",
      "2026-11-01T05:45:00", "2026-11-01T06:00:00", "2026-11-01T06:15:00", "2026-11-01T06:30:00",
      "2026-11-01T06:45:00", "2026-11-01T07:00:00"]),
    ("America/New_York", "0 * * * *", utc(2026, 11, 1, 3, 30),
     ["2026-11-01T04:00:00", "2026-11-01T05:00:00", "2026-11-01T06:00:00", "2026-11-01T07:00:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("tz", "cron", "after", "expected"), DST_CASES)
def test_dst(tz: str, cron: str, after: datetime, expected: list[str]) -> None:
    assert upcoming(cron, after, len(expected), tz=tz) == expected


@pytest.mark.parametrize(("tz", "cron", "after", "expected"), DST_CASES)
def test_dst_from_every_intermediate_instant(
    tz: str, cron: str, after: datetime, expected: list[str]
) -> None:
    """Starting anywhere between two ticks (also inside the repeated hour) gives the next one."""
    sched = parse_schedule(cron=cron, timezone=tz)
    ticks = [after] + [datetime.fromisoformat(t).replace(tzinfo=UTC) for t in expected]
    for prev, nxt in itertools.pairwise(ticks):
        probe = prev
        while probe < nxt:
            assert sched.next_after(probe) == nxt, probe
            probe += timedelta(minutes=7)


def test_dst_ticks_between_counts() -> None:
    paris = parse_schedule(cron="*/15 * * * *", timezone="Europe/Paris")
    day = utc(2026, 3, 28, 23)  # local midnight
    # 23 real hours; the four ticks of the missing hour collapse into the 03:00 tick.
    assert len(ticks_between(paris, day, day + timedelta(hours=23), 1000)) == 23 * 4
    fall = utc(2026, 10, 24, 22)  # local midnight
    assert len(ticks_between(paris, fall, fall + timedelta(hours=25), 1000)) == 25 * 4
    daily = parse_schedule(cron="30 2 * * *", timezone="Europe/Paris")
    assert len(ticks_between(daily, fall, fall + timedelta(hours=25), 1000)) == 1
    assert len(ticks_between(daily, day, day + timedelta(hours=23), 1000)) == 1


# --------------------------------------------------------------------------- ticks_between


MINUTELY = parse_schedule(cron="* * * * *")
D = utc(2026, 1, 1)


def m(minutes: int, seconds: int = 0, us: int = 0) -> datetime:
    return D + timedelta(minutes=minutes, seconds=seconds, microseconds=us)


@pytest.mark.parametrize(
    ("start", "end", "limit", "expected"),
    [
        # start exclusive, end inclusive
        (m(0), m(3), 10, [m(1), m(2), m(3)]),
        (m(0, us=1), m(2, 59), 10, [m(1), m(2)]),
        (m(-1, 59), m(0), 10, [m(0)]),
        (m(0, us=-1), m(0), 10, [m(0)]),
        # limit keeps the earliest
        (m(0), m(60), 2, [m(1), m(2)]),
        (m(0), m(60), 0, []),
        (m(0), m(60), -1, []),
        # empty and reversed windows
        (m(0), m(0), 10, []),
        (m(0, 1), m(0, 59), 10, []),
        (m(60), m(0), 10, []),
    ],
)
def test_ticks_between(
    start: datetime, end: datetime, limit: int, expected: list[datetime]
) -> None:
    assert ticks_between(MINUTELY, start, end, limit) == expected


def test_ticks_between_one_shot() -> None:
    once = parse_schedule(at="2026-01-01T00:00:30Z")
    assert ticks_between(once, utc(2026, 1, 1), utc(2026, 1, 1, 0, 1), 10) == [
        utc(2026, 1, 1, 0, 0, 30)
    ]
    assert ticks_between(once, utc(2026, 1, 1, 0, 0, 30), utc(2026, 1, 1, 0, 1), 10) == []
    assert ticks_between(once, utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 30), 10) == [
        utc(2026, 1, 1, 0, 0, 30)
    ]


@pytest.mark.parametrize("count", [0, 1, 5, 100])
def test_next_times_count(count: int) -> None:
    ticks = next_times(parse_schedule(cron="*/5 * * * *"), utc(2026, 1, 1), count)
    assert len(ticks) == count
    assert ticks == sorted(ticks)
    assert all(b - a == timedelta(minutes=5) for a, b in itertools.pairwise(ticks))
    if ticks:
        assert ticks[0] == utc(2026, 1, 1, 0, 5)


def test_ticks_agree_with_next_times() -> None:
    sched = parse_schedule(cron="H/10 H(8-18) * * MON-FRI", timezone="Europe/Berlin", hash_key="x")
    start = utc(2026, 3, 20)
    ticks = next_times(sched, start, 200)
    assert ticks_between(sched, start, ticks[-1], 1000) == ticks
    assert ticks_between(sched, start, ticks[-1], 50) == ticks[:50]
