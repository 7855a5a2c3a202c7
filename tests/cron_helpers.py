"""Helpers shared by the schedule unit tests (test_cron.py, test_cron_times.py): aware UTC
datetimes, their ISO form, and the next fire times of a cron expression."""

from __future__ import annotations

from datetime import UTC, datetime

from cluster.cron import next_times, parse_schedule


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def upcoming(cron: str, after: datetime, count: int, tz: str = "UTC", key: str = "") -> list[str]:
    return [
        iso(t)
        for t in next_times(parse_schedule(cron=cron, timezone=tz, hash_key=key), after, count)
    ]
