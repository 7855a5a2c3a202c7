"""The schedules that match no fields (pure): ``@every <interval>``, the whole multiples of the
interval since the Unix epoch in UTC, and a one-shot ``at`` time; each with its parsing. The
rules are in ``cluster.cron``'s module doc, which parses every schedule (``parse_schedule``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from cluster.cron_syntax import duration_exact
from cluster.cron_zones import aware, first_instant, require_aware
from cluster.errors import InvalidSchedule

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


class EverySchedule:
    """``@every <interval>``: the multiples of the interval since the Unix epoch (UTC)."""

    __slots__ = ("_period_us", "seconds")

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self._period_us = seconds * 1_000_000

    def __repr__(self) -> str:
        return f"EverySchedule({self.seconds})"

    def next_after(self, t: datetime) -> datetime | None:
        require_aware(t)
        elapsed = (t - _EPOCH) // _MICROSECOND
        k = elapsed // self._period_us + 1
        try:
            return _EPOCH + timedelta(microseconds=k * self._period_us)
        except OverflowError:
            return None


class OnceSchedule:
    """A one-shot ``at`` time."""

    __slots__ = ("instant",)

    def __init__(self, instant: datetime) -> None:
        self.instant = instant

    def __repr__(self) -> str:
        return f"OnceSchedule({self.instant.isoformat()})"

    def next_after(self, t: datetime) -> datetime | None:
        require_aware(t)
        return self.instant if self.instant > t else None


def parse_every(text: str) -> EverySchedule:
    interval = duration_exact(text)
    if interval < 1:
        raise InvalidSchedule(
            f"every: interval {text.strip()!r} is shorter than 1 second", field="every"
        )
    if interval.denominator != 1:
        raise InvalidSchedule(
            f"every: interval {text.strip()!r} is not a whole number of seconds", field="every"
        )
    return EverySchedule(int(interval))


def parse_at(at: str | datetime, tz: ZoneInfo) -> OnceSchedule:
    if isinstance(at, str):
        try:
            when = datetime.fromisoformat(at.strip())
        except ValueError:
            raise InvalidSchedule(f"at: invalid ISO 8601 time {at!r}", field="at") from None
    else:
        when = at
    when = when.replace(microsecond=0)
    if when.tzinfo is None or when.utcoffset() is None:
        instant = first_instant(tz, when.replace(tzinfo=None))
    else:
        instant = when.astimezone(UTC).replace(tzinfo=None)
    return OnceSchedule(aware(instant))
