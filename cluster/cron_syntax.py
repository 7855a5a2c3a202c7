"""The text of schedules: cron fields and ``@every`` durations, parsed into plain values (pure).

:func:`parse_fields` turns a 5- or 6-field expression (or a descriptor) into the sorted values of
each field plus what the matcher in ``cluster.cron`` needs to know about how the day and hour
fields were written. Every error is an InvalidSchedule naming the field and showing the token.

Ranges wrap around (D221): a range whose start is after its end runs to the field's end and on
from its start, as in croniter: ``FRI-MON`` is Fri, Sat, Sun, Mon; ``NOV-FEB`` four months;
``22-2`` in hours is 22, 23, 0, 1, 2; a step counts on across the wrap (``22-2/2`` = 22, 0, 2).

A day field counts as unrestricted when it is written with a leading ``*`` or ``?`` (``*``,
``*/2``, ``*,15``), the rule of Vixie cron and cronie (D222).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from cluster.errors import InvalidSchedule
from cluster.field_hints import descriptor_hint

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


def duration_exact(text: str) -> Fraction:
    """The seconds of a duration, exactly (see :func:`parse_duration`)."""
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
    return float(duration_exact(text))


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

DESCRIPTORS: Final = {
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


def _field_error(spec: _FieldSpec, token: str, problem: str) -> InvalidSchedule:
    return InvalidSchedule(f"cron: {spec.name} field {token!r} {problem}", field="cron")


def _hash(hash_key: str, index: int) -> int:
    digest = hashlib.sha256(f"{hash_key}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _value(spec: _FieldSpec, token: str, part: str) -> int:
    """The value of ``token``, one bound of the list item ``part`` (the whole item is shown)."""
    if token.upper() in spec.names:
        return spec.names[token.upper()]
    shown = repr(part) if part == token else f"{part!r}: {token!r}"
    if not _DIGITS.fullmatch(token):
        if spec.names:
            first, last = next(iter(spec.names)), list(spec.names)[-1]
            expected = f"a number or a name {first}-{last}"
        else:
            expected = "a number"
        if not token:  # "-1", "5-": a bound is missing
            expected += ", or a range a-b of them"
            shown = repr(part)
        raise InvalidSchedule(f"cron: {spec.name} field {shown} is not {expected}", field="cron")
    value = int(token)
    if not spec.lo <= value <= spec.max_value:
        raise InvalidSchedule(
            f"cron: {spec.name} field {shown} out of range {spec.lo}-{spec.max_value}",
            field="cron",
        )
    return value


def _step(spec: _FieldSpec, part: str, text: str) -> int:
    span = spec.hi - spec.lo + 1
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= span:
        raise _field_error(spec, part, f"has invalid step {text!r} (expected 1-{span})")
    return int(text)


def _wrapped(spec: _FieldSpec, lo: int, hi: int, step: int) -> list[int]:
    """``lo`` to the field's end, then on from its start to ``hi``, every ``step``-th value."""
    span = spec.hi - spec.lo + 1
    length = (hi - lo) % span + 1
    return [spec.lo + (lo - spec.lo + i) % span for i in range(0, length, step)]


def _parse_part(spec: _FieldSpec, part: str, hash_key: str) -> Sequence[int]:
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
            lo, hi = _value(spec, hashed.group(1), part), _value(spec, hashed.group(2), part)
            if lo > hi:
                raise _field_error(spec, part, "has a range whose start is after its end")
        h = _hash(hash_key, spec.index)
        if step:
            return range(lo + h % min(step, hi - lo + 1), hi + 1, step)
        value = lo + h % (hi - lo + 1)
        return range(value, value + 1)
    if "-" in base:
        first, _, last = base.partition("-")
        lo, hi = _value(spec, first, part), _value(spec, last, part)
        if lo > hi and spec is _DOW:  # 7 is Sunday like 0: SAT-7 is a plain range, 7-MON wraps
            lo, hi = lo % 7, hi % 7
        if lo > hi:
            return _wrapped(spec, lo, hi, step or 1)
        return range(lo, hi + 1, step or 1)
    lo = _value(spec, base, part)
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


@dataclass(frozen=True, slots=True)
class CronFields:
    """The values each field selects, sorted, and how the fields were written."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]  # day-of-month
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday
    dom_star: bool  # day-of-month written with a leading ``*``/``?``: unrestricted (D222)
    dow_star: bool
    hour_wild: bool  # the hour field is a wildcard, a step or all 24 hours (DST fold rule)


def parse_fields(expression: str, hash_key: str = "") -> CronFields:
    """The fields of a cron expression or descriptor; raises InvalidSchedule(field="cron")."""
    text = expression.strip()
    if text.startswith("@"):
        word = text.lower()
        if word == "@reboot":
            raise InvalidSchedule("cron: @reboot is not supported", field="cron")
        if word not in DESCRIPTORS:
            hint = descriptor_hint(word.split()[0], DESCRIPTORS)
            raise InvalidSchedule(f"cron: unknown descriptor {text!r}{hint}", field="cron")
        text = DESCRIPTORS[word]
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
    return CronFields(
        seconds=sec,
        minutes=minute,
        hours=hour,
        days=dom,
        months=month,
        weekdays=dow,
        dom_star=fields[3][0] in "*?",
        dow_star=fields[5][0] in "*?",
        hour_wild=fields[2] in _STAR_TEXTS or "/" in fields[2] or len(hour) == 24,
    )
