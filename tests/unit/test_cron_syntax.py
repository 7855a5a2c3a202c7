"""Cron syntax as cron users write it (issue #21 item 3): wrap-around ranges (D221), day fields
with a leading ``*`` (Vixie's rule, D222), errors that show the token. Plain values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cluster.cron import next_times, parse_schedule
from cluster.cron_syntax import parse_fields
from cluster.errors import InvalidSchedule

T0 = datetime(2026, 5, 17, 12, 34, 56, tzinfo=UTC)  # a Sunday


def upcoming(cron: str, count: int) -> list[str]:
    return [t.strftime("%Y-%m-%d %H:%M") for t in next_times(parse_schedule(cron=cron), T0, count)]


@pytest.mark.parametrize(
    ("cron", "field", "values"),
    [
        ("0 0 * * FRI-MON", "weekdays", (0, 1, 5, 6)),
        ("0 0 * * MON-SUN", "weekdays", (0, 1, 2, 3, 4, 5, 6)),
        ("0 0 * * 5-1", "weekdays", (0, 1, 5, 6)),
        ("0 0 * * 7-MON", "weekdays", (0, 1)),  # 7 is Sunday: SUN-MON
        ("0 0 * * SAT-7", "weekdays", (0, 6)),  # a plain range ending on Sunday
        ("0 0 * * FRI-MON/2", "weekdays", (0, 5)),  # the step counts on across the wrap
        ("0 0 1 NOV-FEB *", "months", (1, 2, 11, 12)),
        ("0 0 1 NOV-FEB/2 *", "months", (1, 11)),
        ("0 0 1 DEC-JAN *", "months", (1, 12)),
        ("0 22-2 * * *", "hours", (0, 1, 2, 22, 23)),
        ("0 22-2/2 * * *", "hours", (0, 2, 22)),
        ("0 23-1/2 * * *", "hours", (1, 23)),
        ("50-10/15 * * * *", "minutes", (5, 50)),
        ("0 0 28-3 * *", "days", (1, 2, 3, 28, 29, 30, 31)),
        ("58-1 * * * * *", "seconds", (0, 1, 58, 59)),
        ("0 5-5 * * *", "hours", (5,)),  # equal bounds: one value, not the whole cycle
    ],
)
def test_wrap_around_ranges(cron: str, field: str, values: tuple[int, ...]) -> None:
    assert getattr(parse_fields(cron), field) == values


def test_wrap_around_fire_times() -> None:
    assert upcoming("0 0 * * FRI-MON", 5) == [
        "2026-05-18 00:00",  # Mon
        "2026-05-22 00:00",  # Fri
        "2026-05-23 00:00",
        "2026-05-24 00:00",
        "2026-05-25 00:00",
    ]
    assert upcoming("0 22-2/2 * * *", 4) == [
        "2026-05-17 22:00",
        "2026-05-18 00:00",
        "2026-05-18 02:00",
        "2026-05-18 22:00",
    ]
    assert upcoming("0 0 1 NOV-FEB *", 5) == [
        "2026-11-01 00:00",
        "2026-12-01 00:00",
        "2027-01-01 00:00",
        "2027-02-01 00:00",
        "2027-11-01 00:00",
    ]


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        # leading * in day-of-month: unrestricted, so day-of-week alone decides (AND)
        ("0 0 *,15 * MON", ["2026-05-18", "2026-05-25", "2026-06-01"]),
        ("0 0 */2 * MON", ["2026-05-25", "2026-06-01", "2026-06-15"]),  # odd Mondays
        ("0 0 ?,15 * MON", ["2026-05-18", "2026-05-25", "2026-06-01"]),
        # leading * in day-of-week: the day of month alone decides
        ("0 0 1 * *,MON", ["2026-06-01", "2026-07-01", "2026-08-01"]),
        ("0 0 1 * */2", ["2026-08-01", "2026-09-01", "2026-10-01"]),  # 1st AND Sun/Tue/Thu/Sat
        # written without a leading *: restricted even when it covers the week, so OR
        ("0 0 20 * MON-SUN", ["2026-05-18", "2026-05-19", "2026-05-20"]),
        ("0 0 15,* * MON", ["2026-05-18", "2026-05-19", "2026-05-20"]),
        ("0 0 20 * FRI", ["2026-05-20", "2026-05-22", "2026-05-29"]),
    ],
)
def test_leading_star_day_fields(cron: str, expected: list[str]) -> None:
    assert [d[:10] for d in upcoming(cron, len(expected))] == expected


@pytest.mark.parametrize(
    ("cron", "shown"),
    [
        ("-1 * * * *", "minute field '-1' is not a number, or a range a-b of them"),
        ("5- * * * *", "minute field '5-' is not a number, or a range a-b of them"),
        ("0 -3 * * *", "hour field '-3' is not a number"),
        ("5-x * * * *", "minute field '5-x': 'x' is not a number"),
        ("0 0 * * MON-FOO", "day-of-week field 'MON-FOO': 'FOO' is not a number or a name"),
        ("0 22-25 * * *", "hour field '22-25': '25' out of range 0-23"),
        ("70 * * * *", "minute field '70' out of range 0-59"),
        ("H(40-10) * * * *", "minute field 'H(40-10)' has a range whose start is after its end"),
    ],
)
def test_errors_show_the_token(cron: str, shown: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_schedule(cron=cron)
    assert info.value.field == "cron"
    assert shown in info.value.message, info.value.message
