"""Schedules: parse a cron expression, ``@every`` interval or one-shot ``at`` time and answer
"when is the next fire time strictly after ``t``". Pure: no I/O, no clock reads.

The text is parsed by ``cluster.cron_syntax`` (fields, durations) and wall-clock times are read in
their zone by ``cluster.cron_zones``; this module matches fields and turns matches into instants
(``@every`` and ``at`` schedules are ``cluster.cron_simple``'s).
Why not croniter: its hashed ``H`` values come from its own hash (not a stable sha256 of the job
key shared with other tools), its error messages do not name the offending field, and its
behaviour across DST transitions differs from the rules below (D11).

Expressions
    5 fields ``minute hour day-of-month month day-of-week`` or 6 fields with the seconds first
    ``second minute hour day-of-month month day-of-week`` (the Quartz/Dkron order). Fields take
    numbers, ``*``, ranges ``a-b`` (wrapping around when ``a > b``: ``FRI-MON``, ``22-2``), steps
    ``*/n``, ``a-b/n`` and ``a/n`` (= ``a-max/n``), lists ``a,b-c``, names ``JAN``-``DEC`` and
    ``SUN``-``SAT`` (any case); ``?`` is ``*`` in the two day fields and day-of-week 7 is Sunday
    like 0. Descriptors: ``@yearly``/``@annually``, ``@monthly``, ``@weekly``,
    ``@daily``/``@midnight``, ``@hourly``, ``@minutely`` and ``@every <duration>``; ``@reboot``
    is rejected.

Day-of-month and day-of-week
    A day field written with a leading ``*`` or ``?`` (``*``, ``*/2``, ``*,15``) is
    unrestricted, as in Vixie cron and cronie (D222). When both are restricted a day matches if
    EITHER matches (Vixie's OR); otherwise the day must match both (the unrestricted one matches
    every day).

Hashed values (Jenkins style)
    ``H`` is one value of the field's range derived from ``hash_key`` (sha256 of
    ``f"{hash_key}:{field}"``, field 0 = second ... 5 = day-of-week, the same for 5- and
    6-field expressions). ``H(a-b)`` picks within ``a-b``; ``H/n`` and ``H(a-b)/n`` start at a
    hashed offset below ``n`` and step by ``n``. ``H`` in day-of-month picks from 1-28 so it
    exists in every month. The same key always gives the same values; keys spread jobs out.

``@every <duration>``
    Fires on the grid of whole multiples of the interval since the Unix epoch in UTC, so every
    node computes the same ticks whatever the time zone. The interval is a whole number of
    seconds, at least 1 s.

Time zones and daylight-saving transitions (the schedule's ``dst`` policy, D220). Fields are
matched against the local wall clock of ``timezone``:

- Spring forward: wall-clock times in the gap (02:00-02:59 in Europe/Paris on the last Sunday of
  March) do not exist. ``gap: shift`` (default): every matching time inside the gap collapses
  into ONE tick at the first instant after the gap (03:00 local), which coincides with, and is
  not repeated by, a real 03:00 tick. A daily 02:30 job fires at 03:00 that day;
  ``*/15 * * * *`` fires at 01:45 then 03:00 then 03:15. ``gap: skip``: they do not fire (the
  daily 02:30 job skips that day).
- Fall back: wall-clock times in the repeated hour occur twice. ``fold: both`` fires at both
  instants (two distinct ticks), ``fold: first`` at the first only. ``fold: auto`` (default):
  ``both`` if the hour field is a wildcard (``*``, ``?``, a step such as ``*/2`` or ``H/3``, or a
  list covering all 24 hours), since an hourly job stays hourly; ``first`` otherwise (a daily
  02:30 job fires once).

One-shot ``at``
    An ISO 8601 time (``2026-12-24T18:00:00+01:00``) or a datetime; a value without an offset is
    a wall-clock time in ``timezone`` (resolved by the default rules above). Fractions of a second
    are dropped. It fires once: ``next_after(t)`` is the instant when that is later than ``t``.

Every returned datetime is timezone-aware UTC with ``microsecond == 0``. An impossible
expression (``0 0 30 2 *``) parses but never fires: ``next_after`` returns None at once.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from datetime import UTC, date, datetime
from typing import Final, Protocol
from zoneinfo import ZoneInfo

from cluster.cron_simple import EverySchedule, OnceSchedule, parse_at, parse_every
from cluster.cron_syntax import parse_duration, parse_fields
from cluster.cron_zones import (
    DEFAULT_DST,
    ONE_SECOND,
    UTC_KEYS,
    DstPolicy,
    aware,
    fold_bounds,
    gap_bounds,
    offsets,
    require_aware,
    validate_timezone,
)
from cluster.errors import InvalidSchedule

__all__ = [
    "CronSchedule",
    "DstPolicy",
    "EverySchedule",
    "OnceSchedule",
    "Schedule",
    "next_times",
    "parse_duration",
    "parse_schedule",
    "ticks_between",
    "validate_timezone",
]


class Schedule(Protocol):
    def next_after(self, t: datetime) -> datetime | None:
        """The first fire time strictly after the aware ``t`` (aware UTC), None if none is left."""
        ...


_MAX_DAYS: Final = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_SEARCH_YEARS: Final = 401  # the Gregorian calendar repeats every 400 years
_LAST_WALL: Final = datetime(9998, 12, 31, 23, 59, 59)
NEXT_MEMO: Final = 8  # next_after answers kept per schedule (D400)
_MISS: Final = object()


def _mask(values: tuple[int, ...], size: int) -> tuple[bool, ...]:
    chosen = set(values)
    return tuple(i in chosen for i in range(size))


# Day-matching modes.
_ANY_DAY: Final = 0
_DOM_ONLY: Final = 1  # every day of the week matches
_DOW_ONLY: Final = 2  # every day of the month matches
_DOM_OR_DOW: Final = 3  # both restricted: Vixie's OR
_DOM_AND_DOW: Final = 4  # one written with a leading ``*`` (``*/2``) yet not every day: AND


class CronSchedule:
    """A parsed cron expression evaluated on the wall clock of a time zone (see module doc)."""

    __slots__ = (
        "_day_mode",
        "_dom",
        "_dom_mask",
        "_dow_mask",
        "_fold_both",
        "_gap_skip",
        "_gaps_only",
        "_hour_mask",
        "_hours",
        "_memo",
        "_minute_mask",
        "_minutes",
        "_month_mask",
        "_months",
        "_possible",
        "_second_mask",
        "_seconds",
        "_tz",
        "_utc",
        "dst",
        "expression",
        "fixed_hour",
    )

    def __init__(
        self, expression: str, tz: ZoneInfo, hash_key: str = "", dst: DstPolicy = DEFAULT_DST
    ) -> None:
        self.expression = expression
        self._tz = tz
        self._utc = tz.key in UTC_KEYS
        f = parse_fields(expression, hash_key)
        self._seconds, self._minutes, self._hours = f.seconds, f.minutes, f.hours
        self._dom, self._months = f.days, f.months
        self._second_mask = _mask(f.seconds, 60)
        self._minute_mask = _mask(f.minutes, 60)
        self._hour_mask = _mask(f.hours, 24)
        self._dom_mask = _mask(f.days, 32)
        self._month_mask = _mask(f.months, 13)
        self._dow_mask = _mask(f.weekdays, 7)
        self.fixed_hour = not f.hour_wild  # the times a DST warning is about (D223)
        # (lo, hi) naive wall times: every match in (lo, hi] lies in a spring-forward gap, found
        # by a search under ``gap: skip`` that reached its horizon; later searches jump it (D282)
        self._gaps_only: tuple[datetime, datetime] | None = None
        self._set_dst(dst)
        all_days, all_weekdays = len(f.days) == 31, len(f.weekdays) == 7
        if not (f.dom_star or f.dow_star):
            self._day_mode = _DOM_OR_DOW
        elif all_days:
            self._day_mode = _ANY_DAY if all_weekdays else _DOW_ONLY
        else:
            self._day_mode = _DOM_ONLY if all_weekdays else _DOM_AND_DOW
        # Only day-of-month against month lengths can rule out every date (Feb 29 exists).
        self._possible = self._day_mode not in (_DOM_ONLY, _DOM_AND_DOW) or any(
            d <= _MAX_DAYS[m] for m in f.months for d in f.days
        )

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self._tz.key!r})"

    def _set_dst(self, dst: DstPolicy) -> None:
        self.dst = dst
        self._memo: dict[datetime, datetime | None] = {}  # next_after's recent answers (D400)
        self._fold_both = dst.fold == "both" or (dst.fold == "auto" and not self.fixed_hour)
        self._gap_skip = dst.gap == "skip"

    def with_dst(self, dst: DstPolicy) -> CronSchedule:
        """The same expression under another DST policy."""
        twin = copy.copy(self)
        twin._set_dst(dst)
        return twin

    @property
    def tz(self) -> ZoneInfo:
        return self._tz

    # ----------------------------------------------------------------- wall-clock matching

    def _next_day(self, y: int, mo: int, d: int, dim: int) -> int | None:
        """The first matching day ``>= d`` of month ``mo`` of ``y`` (``dim`` days), or None."""
        mode = self._day_mode
        if mode == _ANY_DAY:
            return d if d <= dim else None
        if mode == _DOM_ONLY:
            i = bisect_left(self._dom, d)
            if i < len(self._dom) and self._dom[i] <= dim:
                return self._dom[i]
            return None
        dom_mask, dow_mask = self._dom_mask, self._dow_mask
        if d > dim:
            return None
        wd = date(y, mo, d).isoweekday() % 7
        if mode == _DOM_AND_DOW:
            for day in range(d, dim + 1):
                if dow_mask[wd] and dom_mask[day]:
                    return day
                wd = 0 if wd == 6 else wd + 1
            return None
        for day in range(d, dim + 1):
            if dow_mask[wd] or (mode == _DOM_OR_DOW and dom_mask[day]):
                return day
            wd = 0 if wd == 6 else wd + 1
        return None

    def next_match(self, after: datetime) -> datetime | None:
        """The first naive wall-clock time strictly after the naive ``after`` that matches every
        field, or None when there is none within the search horizon."""
        if after >= _LAST_WALL:
            return None
        nxt = after.replace(microsecond=0) + ONE_SECOND
        y, mo, d, h, mi, s = nxt.year, nxt.month, nxt.day, nxt.hour, nxt.minute, nxt.second
        last_year = min(9998, y + _SEARCH_YEARS)
        months, hours, minutes, seconds = self._months, self._hours, self._minutes, self._seconds
        while True:
            if mo > 12:
                y, mo = y + 1, 1
            if y > last_year:
                return None
            if not self._month_mask[mo]:
                i = bisect_left(months, mo)
                if i == len(months):
                    y, mo = y + 1, months[0]
                    if y > last_year:
                        return None
                else:
                    mo = months[i]
                d, h, mi, s = 1, 0, 0, 0
            dim = _MAX_DAYS[mo] if mo != 2 else (29 if _leap(y) else 28)
            day = self._next_day(y, mo, d, dim)
            if day is None:
                mo, d, h, mi, s = mo + 1, 1, 0, 0, 0
                continue
            if day != d:
                d, h, mi, s = day, 0, 0, 0
            if h > 23 or not self._hour_mask[h]:
                i = bisect_left(hours, h)
                if i == len(hours):
                    d, h, mi, s = d + 1, 0, 0, 0
                    continue
                h, mi, s = hours[i], 0, 0
            if mi > 59 or not self._minute_mask[mi]:
                i = bisect_left(minutes, mi)
                if i == len(minutes):
                    h, mi, s = h + 1, 0, 0
                    continue
                mi, s = minutes[i], 0
            if s > 59 or not self._second_mask[s]:
                i = bisect_left(seconds, s)
                if i == len(seconds):
                    mi, s = mi + 1, 0
                    continue
                s = seconds[i]
            return datetime(y, mo, d, h, mi, s)

    # ----------------------------------------------------------------- instants

    def _past_gaps(self, wall: datetime) -> datetime:
        """Where a search after ``wall`` may start: past the stretch of matches known to lie
        in gaps when ``wall`` is in it (under ``gap: skip`` only)."""
        known = self._gaps_only
        if self._gap_skip and known is not None and known[0] <= wall < known[1]:
            return known[1]
        return wall

    def next_after(self, t: datetime) -> datetime | None:
        require_aware(t)
        if not self._possible:
            return None
        # Planning one job's tick asks the same instants again (the next tick after ``now`` for
        # the plan and for the ticks ahead; the one after that for the next wake-up): the last
        # few answers are kept (an answer depends on the instant alone, D400).
        memo = self._memo
        found = memo.get(t, _MISS)  # one lookup: another thread may clear the memo meanwhile
        if found is not _MISS:
            return found  # type: ignore[return-value]
        found = self._next_after(t)
        if len(memo) >= NEXT_MEMO:
            memo.clear()
        memo[t] = found
        return found

    def _next_after(self, t: datetime) -> datetime | None:
        now = (t if t.tzinfo is UTC else t.astimezone(UTC)).replace(tzinfo=None)
        if self._utc:
            found = self.next_match(now)
            return None if found is None else aware(found)
        tz = self._tz
        local = t.astimezone(tz)
        wall = local.replace(tzinfo=None)
        both = self._fold_both
        best: datetime | None = None
        cand = self.next_match(self._past_gaps(wall))
        while cand is not None:
            o0, o1 = offsets(tz, cand)
            if o0 == o1:
                best = cand - o0
                break
            if o0 < o1:  # in a spring-forward gap
                _, gap_end, change = gap_bounds(tz, cand)
                if not self._gap_skip:  # shift: the end of the gap
                    best = change
                    break
                skipped = self._past_gaps(gap_end - ONE_SECOND)
                if skipped.year > wall.year + _SEARCH_YEARS:
                    # every match up to the horizon falls in a gap: it never fires (D282)
                    self._gaps_only = (wall, skipped)
                    break
                cand = self.next_match(skipped)
                continue
            # Ambiguous (fall back). Its first occurrence is after ``t`` unless ``t`` is in the
            # second pass of the repeated hour; the second occurrence fires under ``both``.
            if cand - o0 > now:
                best = cand - o0
                break
            if both:
                best = cand - o1
                break
            _, end, _ = fold_bounds(tz, cand)
            cand = self.next_match(end - ONE_SECOND)
        if both and local.fold == 0:
            # ``t`` in the first pass of a repeated hour: the second pass comes before any
            # wall-clock time after the repeated hour.
            o0, o1 = offsets(tz, wall)
            if o0 > o1:
                start, end, second_offset = fold_bounds(tz, wall)
                again = self.next_match(start - ONE_SECOND)
                if again is not None and again < end:
                    instant = again - second_offset
                    if best is None or instant < best:
                        best = instant
        return None if best is None else aware(best)


def _leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


# --------------------------------------------------------------------------- public helpers


def parse_schedule(
    *,
    cron: str | None = None,
    timezone: str = "UTC",
    at: str | datetime | None = None,
    hash_key: str = "",
    dst: DstPolicy | None = None,
) -> Schedule:
    """Parse exactly one of ``cron`` (an expression or descriptor) and ``at`` (a one-shot time)
    in ``timezone``; ``hash_key`` (e.g. ``"project/job"``) seeds ``H`` fields; ``dst`` is the
    DST policy of a cron expression (None: the defaults). Raises InvalidSchedule whose ``field``
    is ``cron``, ``timezone``, ``every`` or ``at``."""
    if (cron is None) == (at is None):
        raise InvalidSchedule("cron: a schedule needs exactly one of 'cron' or 'at'", field="cron")
    tz = validate_timezone(timezone)
    if at is not None:
        return parse_at(at, tz)
    assert cron is not None
    words = cron.split(maxsplit=1)
    if words and words[0].lower() == "@every":
        return parse_every(words[1] if len(words) > 1 else "")
    return CronSchedule(cron, tz, hash_key, dst or DEFAULT_DST)


def ticks_between(schedule: Schedule, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """The ticks ``t`` with ``start < t <= end``, ascending, at most ``limit`` (the earliest)."""
    ticks: list[datetime] = []
    if limit <= 0 or end <= start:
        return ticks
    tick = schedule.next_after(start)
    while tick is not None and tick <= end and len(ticks) < limit:
        ticks.append(tick)
        tick = schedule.next_after(tick)
    return ticks


def next_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The first ``count`` ticks strictly after ``after`` (fewer if the schedule ends)."""
    ticks: list[datetime] = []
    tick = schedule.next_after(after)
    while tick is not None and len(ticks) < count:
        ticks.append(tick)
        tick = schedule.next_after(tick)
    return ticks
