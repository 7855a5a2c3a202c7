"""Calendars: named sets of days a schedule skips or is limited to (issue 21, D236).

A calendar document holds holidays from the ``holidays`` library (a country and optionally a
subdivision), explicit dates, and optionally a business-day rule. Without a rule the calendar's
days are its holidays and dates; with ``business_days`` its days are the business days (not a
weekend day, not a holiday, not one of the dates) the rule picks: every one, or the Nth of each
month (``nth: 1`` the first, ``nth: -1`` the last). Membership is asked for a calendar date: the
date of a slot in its schedule's own time zone (the caller converts). Pure: no I/O, no clock.
"""

from __future__ import annotations

import calendar as _cal
import functools
from collections.abc import Iterable
from datetime import date
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cluster.fields import Name, Strict, SubFieldError
from cluster.models import CalendarRef

MAX_DATES = 1000
YEARS_KEPT = 4  # years of holidays one Calendar keeps merged (D286)
MIN_YEAR, MAX_YEAR = 1970, 2200

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _sat_sun() -> list[Weekday]:
    return ["sat", "sun"]


class HolidaySet(Strict):
    """Public holidays of ``country`` (ISO 3166 code, e.g. ``US``, ``DE``) and ``subdivision``
    (e.g. ``CA``, ``BY``), as the ``holidays`` library knows them."""

    country: str = Field(min_length=2, max_length=3)
    subdivision: str | None = Field(default=None, min_length=1, max_length=16)

    @model_validator(mode="after")
    def _known(self) -> HolidaySet:
        check_holidays(self.country, self.subdivision)
        return self


class BusinessDays(Strict):
    """The business days the calendar holds: every one (``nth`` unset) or the Nth of each month
    (1 = first, -1 = last; a month with fewer business days has none)."""

    nth: int | None = Field(default=None, ge=-23, le=23)

    @field_validator("nth")
    @classmethod
    def _not_zero(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("nth counts from 1 (first) or -1 (last); 0 is no day")
        return value


class CalendarSpec(Strict):
    """What a user writes: ``cronmesh calendar apply -f``, ``PUT …/calendars/{name}``."""

    name: Name
    description: str = Field(default="", max_length=4096)
    holidays: list[HolidaySet] = Field(default_factory=list, max_length=8)
    dates: list[date] = Field(default_factory=list, max_length=MAX_DATES)
    weekend: list[Weekday] = Field(default_factory=_sat_sun, max_length=7)
    business_days: BusinessDays | None = None

    @field_validator("dates")
    @classmethod
    def _years(cls, value: list[date]) -> list[date]:
        for d in value:
            if not MIN_YEAR <= d.year <= MAX_YEAR:
                raise ValueError(f"{d.isoformat()}: a date lies between {MIN_YEAR} and {MAX_YEAR}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _something(self) -> CalendarSpec:
        if not (self.holidays or self.dates or self.business_days):
            raise ValueError("a calendar needs holidays, dates or business_days")
        if self.business_days is not None and len(set(self.weekend)) == 7:
            raise ValueError("weekend: a week of weekend days leaves no business day")
        return self


def check_holidays(country: str, subdivision: str | None) -> None:
    """A 400 naming ``holidays.N.country`` or ``….subdivision`` when the library lacks it."""
    import holidays

    supported = holidays.list_supported_countries()
    if country not in supported:
        raise SubFieldError(
            f"unknown country code {country!r} (ISO 3166, e.g. US, DE, FR)", "country"
        )
    if subdivision is not None and subdivision not in supported[country]:
        raise SubFieldError(
            f"{country} has no subdivision {subdivision!r} "
            f"(known: {', '.join(supported[country][:20]) or 'none'})",
            "subdivision",
        )


@functools.lru_cache(maxsize=512)
def holiday_dates(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    """The holidays of one country/subdivision and year (cached: the library builds them)."""
    import holidays

    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year).keys())


@functools.lru_cache(maxsize=4096)
def _nth_business_day(cal: Calendar, year: int, month: int) -> date | None:
    days = [
        date(year, month, d)
        for d in range(1, _cal.monthrange(year, month)[1] + 1)
        if cal.is_business_day(date(year, month, d))
    ]
    nth = cal.nth
    assert nth is not None
    if nth > 0:
        return days[nth - 1] if nth <= len(days) else None
    return days[nth] if -nth <= len(days) else None


class Calendar:
    """A calendar made ready to answer "does it hold this date?" (hashable by content)."""

    __slots__ = ("_years", "business", "dates", "holidays", "name", "nth", "weekend")

    def __init__(self, spec: CalendarSpec) -> None:
        self.name = spec.name
        self.holidays = tuple((h.country, h.subdivision) for h in spec.holidays)
        self.dates = frozenset(spec.dates)
        self.weekend = frozenset(WEEKDAYS.index(w) for w in spec.weekend)
        self.business = spec.business_days is not None
        self.nth = spec.business_days.nth if spec.business_days else None
        # its holiday sets merged per year, kept by the calendar itself: asking the shared LRU
        # of holiday_dates for each set on every slot thrashed once the cluster's calendars
        # named more sets than it holds — 100 calendars of 8 countries cost the leader ~0.15 s
        # per slot, in its event loop (D286)
        self._years: dict[int, frozenset[date]] = {}

    def _key(self) -> tuple[object, ...]:
        return (self.name, self.holidays, self.dates, self.weekend, self.business, self.nth)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Calendar) and self._key() == other._key()

    def is_holiday(self, day: date) -> bool:
        if day in self.dates:
            return True
        if not self.holidays:
            return False
        held = self._years.get(day.year)
        if held is None:
            held = frozenset().union(*(holiday_dates(c, s, day.year) for c, s in self.holidays))
            if len(self._years) >= YEARS_KEPT:
                self._years.pop(next(iter(self._years)))
            self._years[day.year] = held
        return day in held

    def is_business_day(self, day: date) -> bool:
        return day.weekday() not in self.weekend and not self.is_holiday(day)

    def contains(self, day: date) -> bool:
        if not self.business:
            return self.is_holiday(day)
        if not self.is_business_day(day):
            return False
        return self.nth is None or _nth_business_day(self, day.year, day.month) == day


def compile_calendars(specs: Iterable[CalendarSpec]) -> dict[str, Calendar]:
    return {spec.name: Calendar(spec) for spec in specs}


def calendar_says(ref: CalendarRef | None, day: date, calendars: dict[str, Calendar]) -> str | None:
    """Why ``day`` is not a day to fire on under ``ref`` (a message), or None when it is.
    A name missing from ``calendars`` (deleted meanwhile) holds no day."""
    if ref is None:
        return None
    for name in ref.skip:
        cal = calendars.get(name)
        if cal is not None and cal.contains(day):
            return f"{day.isoformat()} is in calendar {name!r}"
    if ref.only and not any(
        (cal := calendars.get(n)) is not None and cal.contains(day) for n in ref.only
    ):
        return f"{day.isoformat()} is in none of the calendars {', '.join(ref.only)}"
    return None
