"""Time-zone maths for schedules (pure): reading a naive wall-clock time in a zone, finding the
instant of a daylight-saving transition, and the DST policy of a schedule (D220).

A wall-clock time of a zone exists once, twice (in the repeated range of a fall-back transition:
the *fold*) or not at all (in the skipped range of a spring-forward transition: the *gap*).
Naive datetimes here are either wall-clock times of the zone or UTC instants, as each function
says; everything works on whole seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cluster.errors import InvalidSchedule
from cluster.field_hints import timezone_hint

ONE_SECOND: Final = timedelta(seconds=1)
UTC_KEYS: Final = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Zulu"})

Gap = Literal["shift", "skip"]
Fold = Literal["auto", "first", "both"]
GAPS: Final[tuple[Gap, ...]] = ("shift", "skip")
FOLDS: Final[tuple[Fold, ...]] = ("auto", "first", "both")


@dataclass(frozen=True, slots=True)
class DstPolicy:
    """What a cron schedule does with wall-clock times that a transition skips or repeats.

    ``gap``: ``shift`` (default) fires the matching times of a skipped range once, at the first
    instant after it; ``skip`` does not fire them. ``fold``: ``first`` fires a repeated time at
    its first occurrence only, ``both`` at both; ``auto`` (default) is ``both`` when the hour
    field is a wildcard or a step (an hourly job stays hourly) and ``first`` otherwise."""

    gap: Gap = "shift"
    fold: Fold = "auto"

    @classmethod
    def of(cls, gap: str | None = None, fold: str | None = None) -> DstPolicy:
        """From untrusted text; raises InvalidSchedule naming ``dst.gap`` or ``dst.fold``."""
        if gap is not None and gap not in GAPS:
            raise InvalidSchedule(
                f"dst.gap: {gap!r} is not one of {', '.join(GAPS)}", field="dst.gap"
            )
        if fold is not None and fold not in FOLDS:
            raise InvalidSchedule(
                f"dst.fold: {fold!r} is not one of {', '.join(FOLDS)}", field="dst.fold"
            )
        return cls(gap or "shift", fold or "auto")


DEFAULT_DST: Final = DstPolicy()


def aware(naive_utc: datetime) -> datetime:
    """The naive UTC ``naive_utc`` as an aware UTC datetime."""
    return naive_utc.replace(tzinfo=UTC)


def require_aware(t: datetime) -> None:
    """Raise ValueError unless ``t`` is timezone-aware (what a schedule is asked about)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is required, got {t!r}")


def validate_timezone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raises InvalidSchedule(field="timezone") when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule(
            f"timezone: unknown time zone {name!r}{timezone_hint(name)}", field="timezone"
        ) from None


def offsets(tz: ZoneInfo, wall: datetime) -> tuple[timedelta, timedelta]:
    """UTC offsets of the naive ``wall`` read with fold=0 and fold=1. Equal: the time exists
    once; first > second: it occurs twice (fall back); first < second: it is in a gap."""
    o0 = wall.replace(tzinfo=tz).utcoffset()
    o1 = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert o0 is not None and o1 is not None
    return o0, o1


def utc_offset_at(tz: ZoneInfo, instant: datetime) -> timedelta:
    """The offset of ``tz`` at the naive UTC ``instant``."""
    off = tz.fromutc(instant.replace(tzinfo=tz)).utcoffset()
    assert off is not None
    return off


def transition(tz: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """The naive UTC instant in ``(lo, hi]`` (whole seconds) where the offset of ``tz`` changes
    from its value at ``lo`` to its value at ``hi``: the smallest instant with the offset of
    ``hi``. Transitions are rare, so a bisection on seconds is fine."""
    target = utc_offset_at(tz, hi)
    lo_s, hi_s = 0, int((hi - lo).total_seconds())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if utc_offset_at(tz, lo + timedelta(seconds=mid)) == target:
            hi_s = mid
        else:
            lo_s = mid
    return lo + timedelta(seconds=hi_s)


def fold_bounds(tz: ZoneInfo, wall: datetime) -> tuple[datetime, datetime, timedelta]:
    """For an ambiguous naive ``wall``: the repeated wall-clock range ``[start, end)`` and the
    offset of its second occurrence."""
    o0, o1 = offsets(tz, wall)
    change = transition(tz, wall - o0, wall - o1)
    start = change + o1
    return start, start + (o0 - o1), o1


def gap_bounds(tz: ZoneInfo, wall: datetime) -> tuple[datetime, datetime, datetime]:
    """For a naive ``wall`` in a gap: the skipped wall-clock range ``[start, end)`` and the naive
    UTC instant of the transition (the first instant after the gap, whose wall time is ``end``)."""
    o0, o1 = offsets(tz, wall)
    change = transition(tz, wall - o1, wall - o0)
    return change + o0, change + o1, change


def first_instant(tz: ZoneInfo, wall: datetime) -> datetime:
    """The naive UTC instant of the naive ``wall`` in ``tz``: the first occurrence when it is
    ambiguous, the end of the gap when it does not exist."""
    o0, o1 = offsets(tz, wall)
    if o0 >= o1:
        return wall - o0
    return transition(tz, wall - o1, wall - o0)


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of a zone's offset: at the naive UTC ``instant`` the wall clock goes from
    ``before`` to ``after`` (``after > before``: a gap of wall times; ``after < before``: the
    wall times ``[after, before)`` repeat)."""

    instant: datetime
    before: datetime  # wall clock just before (naive)
    after: datetime  # wall clock at the instant (naive)

    @property
    def kind(self) -> Literal["gap", "fold"]:
        return "gap" if self.after > self.before else "fold"


_SCAN_STEP: Final = timedelta(hours=6)
MAX_TRANSITIONS: Final = 16


def transitions(tz: ZoneInfo, start: datetime, end: datetime) -> list[Transition]:
    """The offset changes of ``tz`` in ``(start, end]`` (naive UTC), at most MAX_TRANSITIONS:
    sampled every 6 hours (zones do not change twice within 6 hours), each found by bisection."""
    found: list[Transition] = []
    if tz.key in UTC_KEYS:
        return found
    lo = start.replace(microsecond=0)  # transitions fall on whole seconds
    off = utc_offset_at(tz, lo)
    while lo < end and len(found) < MAX_TRANSITIONS:
        hi = min(lo + _SCAN_STEP, end)
        new = utc_offset_at(tz, hi)
        if new != off:
            at = transition(tz, lo, hi)
            found.append(Transition(at, at + off, at + new))
            off = new
        lo = hi
    return found
