"""Schedules: parse a cron expression, ``@every`` interval or one-shot ``at`` time and answer
"when is the next fire time strictly after ``t``". Pure: no I/O, no clock reads.

Why not croniter: its hashed ``H`` values come from its own hash (not a stable sha256 of the job
key shared with other tools), its error messages do not name the offending field, and its
behaviour across DST transitions differs from the rules below. Matching cron fields against a
naive wall-clock time is small enough to do here, and converting wall-clock times to instants
is done explicitly with :mod:`zoneinfo`.

Expressions
    5 fields ``minute hour day-of-month month day-of-week`` or 6 fields with the seconds first
    ``second minute hour day-of-month month day-of-week`` (the Quartz/Dkron order). Fields take
    numbers, ``*``, ranges ``a-b``, steps ``*/n``, ``a-b/n`` and ``a/n`` (= ``a-max/n``), lists
    ``a,b-c``, names ``JAN``-``DEC`` and ``SUN``-``SAT`` (any case); ``?`` is ``*`` in the two day
    fields and day-of-week 7 is Sunday like 0. Descriptors: ``@yearly``/``@annually``,
    ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``, ``@minutely`` and
    ``@every <duration>``; ``@reboot`` is rejected.

Day-of-month and day-of-week
    When both are restricted (neither is ``*`` nor ``?``) a day matches if EITHER matches, as in
    Vixie cron; otherwise the day must match both (the unrestricted one matches every day).

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

Time zones and daylight-saving transitions (the rules of Vixie cron and of Kubernetes CronJobs
with a time zone). Fields are matched against the local wall clock of ``timezone``:

- Spring forward: wall-clock times in the gap (02:00-02:59 in Europe/Paris on the last Sunday of
  March) do not exist. Every matching time inside the gap collapses into ONE tick at the first
  instant after the gap (03:00 local), which coincides with, and is not repeated by, a real
  03:00 tick. A daily 02:30 job fires at 03:00 that day; ``*/15 * * * *`` fires at 01:45 then
  03:00 then 03:15.
- Fall back: wall-clock times in the repeated hour occur twice. If the hour field is a wildcard
  (``*``, ``?``, a step such as ``*/2`` or ``H/3``, or a list covering all 24 hours) the schedule
  fires at both instants, since they are distinct real times and an hourly job stays hourly.
  Otherwise (a fixed hour, e.g. a daily 02:30 job) it fires only at the first occurrence.

One-shot ``at``
    An ISO 8601 time (``2026-12-24T18:00:00+01:00``) or a datetime; a value without an offset is
    a wall-clock time in ``timezone`` (resolved by the rules above). Fractions of a second are
    dropped. It fires once: ``next_after(t)`` is the instant when that is later than ``t``.

Every returned datetime is timezone-aware UTC with ``microsecond == 0``. An impossible
expression (``0 0 30 2 *``) parses but never fires: ``next_after`` returns None at once.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cluster.errors import InvalidSchedule

__all__ = [
    "CronSchedule",
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


# --------------------------------------------------------------------------- time zones


def validate_timezone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raises InvalidSchedule(field="timezone") when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule(f"timezone: unknown time zone {name!r}", field="timezone") from None


_ONE_SECOND: Final = timedelta(seconds=1)
_UTC_KEYS: Final = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Zulu"})


def _offsets(tz: ZoneInfo, wall: datetime) -> tuple[timedelta, timedelta]:
    """UTC offsets of the naive ``wall`` read with fold=0 and fold=1. Equal: the time exists
    once; first > second: it occurs twice (fall back); first < second: it is in a gap."""
    o0 = wall.replace(tzinfo=tz).utcoffset()
    o1 = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert o0 is not None and o1 is not None
    return o0, o1


def _utc_offset_at(tz: ZoneInfo, instant: datetime) -> timedelta:
    """The offset of ``tz`` at the naive UTC ``instant``."""
    off = tz.fromutc(instant.replace(tzinfo=tz)).utcoffset()
    assert off is not None
    return off


def _transition(tz: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """The naive UTC instant in ``(lo, hi]`` (whole seconds) where the offset of ``tz`` changes
    from its value at ``lo`` to its value at ``hi``: the smallest instant with the offset of
    ``hi``. Transitions are rare, so a bisection on seconds is fine."""
    target = _utc_offset_at(tz, hi)
    lo_s, hi_s = 0, int((hi - lo).total_seconds())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _utc_offset_at(tz, lo + timedelta(seconds=mid)) == target:
            hi_s = mid
        else:
            lo_s = mid
    return lo + timedelta(seconds=hi_s)


def _fold_bounds(tz: ZoneInfo, wall: datetime) -> tuple[datetime, datetime, timedelta]:
    """For an ambiguous naive ``wall``: the repeated wall-clock range ``[start, end)`` and the
    offset of its second occurrence."""
    o0, o1 = _offsets(tz, wall)
    change = _transition(tz, wall - o0, wall - o1)
    start = change + o1
    return start, start + (o0 - o1), o1


def _first_instant(tz: ZoneInfo, wall: datetime) -> datetime:
    """The naive UTC instant of the naive ``wall`` in ``tz``: the first occurrence when it is
    ambiguous, the end of the gap when it does not exist."""
    o0, o1 = _offsets(tz, wall)
    if o0 >= o1:
        return wall - o0
    return _transition(tz, wall - o1, wall - o0)


def _aware(naive_utc: datetime) -> datetime:
    return naive_utc.replace(tzinfo=UTC)


def _require_aware(t: datetime) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is required, got {t!r}")


# --------------------------------------------------------------------------- durations

_DURATION_UNITS: Final[dict[str, Fraction]] = {
    "ns": Fraction(1, 1_000_000_000),
    "us": Fraction(1, 1_000_000),
    "µs": Fraction(1, 1_000_000),
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
    "w": Fraction(7 * 86400),
}
_NUMBER: Final = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_DURATION_PART: Final = re.compile(rf"\s*({_NUMBER})\s*(ns|us|µs|ms|s|m|h|d|w)")
_DURATION_FULL: Final = re.compile(rf"(?:\s*{_NUMBER}\s*(?:ns|us|µs|ms|s|m|h|d|w))+\s*")
_PLAIN_SECONDS: Final = re.compile(rf"\s*({_NUMBER})\s*")


def _duration_exact(text: str) -> Fraction:
    plain = _PLAIN_SECONDS.fullmatch(text)
    if plain:
        return Fraction(plain.group(1))
    if not _DURATION_FULL.fullmatch(text):
        raise InvalidSchedule(f"every: invalid duration {text!r}", field="every")
    return sum(
        (Fraction(m.group(1)) * _DURATION_UNITS[m.group(2)] for m in _DURATION_PART.finditer(text)),
        Fraction(0),
    )


def parse_duration(text: str) -> float:
    """Seconds in a duration: Go style ``1h30m10s``, ``500ms``, ``2d``, ``1w``, parts may be
    separated by spaces (``1h 30m``), decimals allowed (``1.5h``); a plain number is seconds.
    Raises InvalidSchedule(field="every")."""
    return float(_duration_exact(text))


# --------------------------------------------------------------------------- cron fields


@dataclass(frozen=True, slots=True)
class _FieldSpec:
    index: int  # 0 second ... 5 day-of-week (also the hash salt)
    name: str
    lo: int
    hi: int  # highest value of ``*``
    max_value: int  # highest value accepted literally (7 for day-of-week)
    hash_lo: int
    hash_hi: int
    names: dict[str, int]


_MONTH_NAMES: Final = {
    n: i + 1
    for i, n in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
_DOW_NAMES: Final = {n: i for i, n in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_SECOND: Final = _FieldSpec(0, "second", 0, 59, 59, 0, 59, {})
_MINUTE: Final = _FieldSpec(1, "minute", 0, 59, 59, 0, 59, {})
_HOUR: Final = _FieldSpec(2, "hour", 0, 23, 23, 0, 23, {})
_DOM: Final = _FieldSpec(3, "day-of-month", 1, 31, 31, 1, 28, {})
_MONTH: Final = _FieldSpec(4, "month", 1, 12, 12, 1, 12, _MONTH_NAMES)
_DOW: Final = _FieldSpec(5, "day-of-week", 0, 6, 7, 0, 6, _DOW_NAMES)
_FIELDS: Final = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)

_DESCRIPTORS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
    "@minutely": "* * * * *",
}
_HASHED: Final = re.compile(r"[Hh](?:\((\w+)-(\w+)\))?")
_DIGITS: Final = re.compile(r"[0-9]+")
_STAR_TEXTS: Final = frozenset({"*", "?", "*/1", "?/1"})
_MAX_DAYS: Final = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_SEARCH_YEARS: Final = 401  # the Gregorian calendar repeats every 400 years
_LAST_WALL: Final = datetime(9998, 12, 31, 23, 59, 59)


def _field_error(spec: _FieldSpec, token: str, problem: str) -> InvalidSchedule:
    return InvalidSchedule(f"cron: {spec.name} field {token!r} {problem}", field="cron")


def _hash(hash_key: str, index: int) -> int:
    digest = hashlib.sha256(f"{hash_key}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _value(spec: _FieldSpec, token: str) -> int:
    if token.upper() in spec.names:
        return spec.names[token.upper()]
    if not _DIGITS.fullmatch(token):
        if spec.names:
            first, last = next(iter(spec.names)), list(spec.names)[-1]
            expected = f"a number or a name {first}-{last}"
        else:
            expected = "a number"
        raise _field_error(spec, token, f"is not {expected}")
    value = int(token)
    if not spec.lo <= value <= spec.max_value:
        raise _field_error(spec, token, f"out of range {spec.lo}-{spec.max_value}")
    return value


def _step(spec: _FieldSpec, part: str, text: str) -> int:
    span = spec.hi - spec.lo + 1
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= span:
        raise _field_error(spec, part, f"has invalid step {text!r} (expected 1-{span})")
    return int(text)


def _parse_part(spec: _FieldSpec, part: str, hash_key: str) -> range:
    base, _, step_text = part.partition("/")
    step = _step(spec, part, step_text) if "/" in part else 0
    if base in ("*", "?"):
        if base == "?" and spec not in (_DOM, _DOW):
            raise _field_error(spec, part, "uses '?', allowed only in the day fields")
        return range(spec.lo, spec.hi + 1, step or 1)
    hashed = _HASHED.fullmatch(base)
    if hashed:
        lo, hi = spec.hash_lo, spec.hash_hi
        if hashed.group(1) is not None:
            lo, hi = _value(spec, hashed.group(1)), _value(spec, hashed.group(2))
            if lo > hi:
                raise _field_error(spec, part, "has a range whose start is after its end")
        h = _hash(hash_key, spec.index)
        if step:
            return range(lo + h % min(step, hi - lo + 1), hi + 1, step)
        value = lo + h % (hi - lo + 1)
        return range(value, value + 1)
    if "-" in base:
        first, _, last = base.partition("-")
        lo, hi = _value(spec, first), _value(spec, last)
        if lo > hi:
            raise _field_error(spec, part, "has a range whose start is after its end")
        return range(lo, hi + 1, step or 1)
    lo = _value(spec, base)
    return range(lo, (spec.hi if step else lo) + 1, step or 1)


def _parse_field(spec: _FieldSpec, text: str, hash_key: str) -> tuple[int, ...]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise _field_error(spec, text, "has an empty list item")
        chosen = _parse_part(spec, part, hash_key)
        if not chosen:
            raise _field_error(spec, part, "selects no value")
        values.update(chosen)
    if spec is _DOW and 7 in values:
        values.discard(7)
        values.add(0)
    return tuple(sorted(values))


def _mask(values: tuple[int, ...], size: int) -> tuple[bool, ...]:
    chosen = set(values)
    return tuple(i in chosen for i in range(size))


# Day-matching modes.
_ANY_DAY: Final = 0
_DOM_ONLY: Final = 1  # day-of-week unrestricted
_DOW_ONLY: Final = 2  # day-of-month unrestricted
_DOM_OR_DOW: Final = 3  # both restricted: Vixie's OR


class CronSchedule:
    """A parsed cron expression evaluated on the wall clock of a time zone (see module doc)."""

    __slots__ = (
        "_day_mode",
        "_dom",
        "_dom_mask",
        "_dow_mask",
        "_hour_mask",
        "_hour_wild",
        "_hours",
        "_minute_mask",
        "_minutes",
        "_month_mask",
        "_months",
        "_possible",
        "_second_mask",
        "_seconds",
        "_tz",
        "_utc",
        "expression",
    )

    def __init__(self, expression: str, tz: ZoneInfo, hash_key: str = "") -> None:
        self.expression = expression
        self._tz = tz
        self._utc = tz.key in _UTC_KEYS
        text = expression.strip()
        if text.startswith("@"):
            word = text.lower()
            if word == "@reboot":
                raise InvalidSchedule("cron: @reboot is not supported", field="cron")
            if word not in _DESCRIPTORS:
                raise InvalidSchedule(f"cron: unknown descriptor {text!r}", field="cron")
            text = _DESCRIPTORS[word]
        fields = text.split()
        if not fields:
            raise InvalidSchedule("cron: empty expression", field="cron")
        if len(fields) == 5:
            fields = ["0", *fields]
        elif len(fields) != 6:
            raise InvalidSchedule(f"cron: expected 5 or 6 fields, got {len(fields)}", field="cron")
        sec, minute, hour, dom, month, dow = (
            _parse_field(spec, f, hash_key) for spec, f in zip(_FIELDS, fields, strict=True)
        )
        self._seconds, self._minutes, self._hours = sec, minute, hour
        self._dom, self._months = dom, month
        self._second_mask = _mask(sec, 60)
        self._minute_mask = _mask(minute, 60)
        self._hour_mask = _mask(hour, 24)
        self._dom_mask = _mask(dom, 32)
        self._month_mask = _mask(month, 13)
        self._dow_mask = _mask(dow, 7)
        self._hour_wild = fields[2] in _STAR_TEXTS or "/" in fields[2] or len(hour) == 24
        dom_star, dow_star = fields[3] in _STAR_TEXTS, fields[5] in _STAR_TEXTS
        if dom_star:
            self._day_mode = _ANY_DAY if dow_star else _DOW_ONLY
        else:
            self._day_mode = _DOM_ONLY if dow_star else _DOM_OR_DOW
        # Only day-of-month against month lengths can rule out every date (Feb 29 exists).
        self._possible = self._day_mode != _DOM_ONLY or any(
            d <= _MAX_DAYS[m] for m in month for d in dom
        )

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self._tz.key!r})"

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
        for day in range(d, dim + 1):
            if dow_mask[wd] or (mode == _DOM_OR_DOW and dom_mask[day]):
                return day
            wd = 0 if wd == 6 else wd + 1
        return None

    def _next_match(self, after: datetime) -> datetime | None:
        """The first naive wall-clock time strictly after the naive ``after`` that matches every
        field, or None when there is none within the search horizon."""
        if after >= _LAST_WALL:
            return None
        nxt = after.replace(microsecond=0) + _ONE_SECOND
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

    def next_after(self, t: datetime) -> datetime | None:
        _require_aware(t)
        if not self._possible:
            return None
        now = (t if t.tzinfo is UTC else t.astimezone(UTC)).replace(tzinfo=None)
        if self._utc:
            found = self._next_match(now)
            return None if found is None else _aware(found)
        tz = self._tz
        local = t.astimezone(tz)
        wall = local.replace(tzinfo=None)
        best: datetime | None = None
        cand = self._next_match(wall)
        while cand is not None:
            o0, o1 = _offsets(tz, cand)
            if o0 == o1:
                best = cand - o0
                break
            if o0 < o1:  # in a spring-forward gap: the end of the gap
                best = _transition(tz, cand - o1, cand - o0)
                break
            # Ambiguous (fall back). Its first occurrence is after ``t`` unless ``t`` is in the
            # second pass of the repeated hour; the second occurrence fires for wildcard hours.
            if cand - o0 > now:
                best = cand - o0
                break
            if self._hour_wild:
                best = cand - o1
                break
            _, end, _ = _fold_bounds(tz, cand)
            cand = self._next_match(end - _ONE_SECOND)
        if self._hour_wild and local.fold == 0:
            # ``t`` in the first pass of a repeated hour: the second pass comes before any
            # wall-clock time after the repeated hour.
            o0, o1 = _offsets(tz, wall)
            if o0 > o1:
                start, end, second_offset = _fold_bounds(tz, wall)
                again = self._next_match(start - _ONE_SECOND)
                if again is not None and again < end:
                    instant = again - second_offset
                    if best is None or instant < best:
                        best = instant
        return None if best is None else _aware(best)


def _leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


# --------------------------------------------------------------------------- other schedules

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
        _require_aware(t)
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
        _require_aware(t)
        return self.instant if self.instant > t else None


def _parse_every(text: str) -> EverySchedule:
    interval = _duration_exact(text)
    if interval < 1:
        raise InvalidSchedule(
            f"every: interval {text.strip()!r} is shorter than 1 second", field="every"
        )
    if interval.denominator != 1:
        raise InvalidSchedule(
            f"every: interval {text.strip()!r} is not a whole number of seconds", field="every"
        )
    return EverySchedule(int(interval))


def _parse_at(at: str | datetime, tz: ZoneInfo) -> OnceSchedule:
    if isinstance(at, str):
        try:
            when = datetime.fromisoformat(at.strip())
        except ValueError:
            raise InvalidSchedule(f"at: invalid ISO 8601 time {at!r}", field="at") from None
    else:
        when = at
    when = when.replace(microsecond=0)
    if when.tzinfo is None or when.utcoffset() is None:
        instant = _first_instant(tz, when.replace(tzinfo=None))
    else:
        instant = when.astimezone(UTC).replace(tzinfo=None)
    return OnceSchedule(_aware(instant))


# --------------------------------------------------------------------------- public helpers


def parse_schedule(
    *,
    cron: str | None = None,
    timezone: str = "UTC",
    at: str | datetime | None = None,
    hash_key: str = "",
) -> Schedule:
    """Parse exactly one of ``cron`` (an expression or descriptor) and ``at`` (a one-shot time)
    in ``timezone``; ``hash_key`` (e.g. ``"project/job"``) seeds ``H`` fields. Raises
    InvalidSchedule whose ``field`` is ``cron``, ``timezone``, ``every`` or ``at``."""
    if (cron is None) == (at is None):
        raise InvalidSchedule("cron: a schedule needs exactly one of 'cron' or 'at'", field="cron")
    tz = validate_timezone(timezone)
    if at is not None:
        return _parse_at(at, tz)
    assert cron is not None
    words = cron.split(maxsplit=1)
    if words and words[0].lower() == "@every":
        return _parse_every(words[1] if len(words) > 1 else "")
    return CronSchedule(cron, tz, hash_key)


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
