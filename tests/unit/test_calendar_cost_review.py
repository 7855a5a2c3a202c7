"""Review of the calendars branch (D286): the cost of asking calendars, slot after slot.

A project editor may keep 100 calendars of 8 holiday sets each and name 32 of them in a schedule.
The holiday sets came from one shared LRU of 512 (country, subdivision, year) entries, asked for
every set on every slot: with more sets in use than it holds, every slot rebuilt its sets in the
``holidays`` library (~1-3 ms each), ~0.15 s per slot in the leader's event loop. A calendar now
keeps its sets merged per year: after the first slot of a year, no library call."""

from __future__ import annotations

from datetime import date

import holidays
import pytest

from cluster.calendars import Calendar, CalendarSpec, calendar_says, holiday_dates
from cluster.models import CalendarRef


def _combos(n: int) -> list[tuple[str, str]]:
    supported = holidays.list_supported_countries()
    out = [
        (c, s)
        for c, subs in sorted(supported.items())
        for s in subs
        if len(s) <= 16 and len(c) <= 3
    ]
    assert len(out) >= n
    return out[:n]


@pytest.fixture
def library_calls(monkeypatch):
    calls: list[tuple[str, object]] = []
    real = holidays.country_holidays

    def counted(country, *args, **kwargs):
        calls.append((country, kwargs.get("years")))
        return real(country, *args, **kwargs)

    holiday_dates.cache_clear()
    monkeypatch.setattr(holidays, "country_holidays", counted)
    yield calls
    holiday_dates.cache_clear()


def test_many_calendars_cost_one_build_per_calendar_year(library_calls):
    combos = _combos(800)
    cals = {}
    for i in range(100):
        sets = [{"country": c, "subdivision": s} for c, s in combos[i * 8 : (i + 1) * 8]]
        spec = CalendarSpec(name=f"c{i}", holidays=sets)
        cals[spec.name] = Calendar(spec)
    refs = [
        CalendarRef(
            skip=[f"c{(j * 32 + k) % 100}" for k in range(16)],
            only=[f"c{(j * 32 + 16 + k) % 100}" for k in range(16)],
        )
        for j in range(4)
    ]
    day = date(2026, 12, 9)  # a Wednesday that is a holiday almost nowhere
    first = [calendar_says(r, day, cals) for r in refs]
    built = len(library_calls)
    assert 0 < built <= 800
    for _ in range(5):  # the leader's next passes, the planner's next slots of that year
        assert [calendar_says(r, day, cals) for r in refs] == first
        for r in refs:  # another day of the same year
            calendar_says(r, date(2026, 6, 2), cals)
    assert len(library_calls) == built, "later slots of the year rebuilt holiday sets"


def test_the_merged_year_answers_as_the_sets_do(library_calls):
    spec = CalendarSpec(
        name="us-de",
        holidays=[{"country": "US"}, {"country": "DE", "subdivision": "BY"}],
        dates=[date(2027, 3, 3)],
    )
    cal = Calendar(spec)
    assert cal.contains(date(2026, 7, 4))  # US
    assert cal.contains(date(2026, 1, 6))  # Bavaria: Epiphany
    assert not cal.contains(date(2026, 1, 7))
    assert cal.contains(date(2027, 3, 3))  # an explicit date
    for year in range(2026, 2036):  # more years than kept: the oldest is dropped, answers hold
        assert cal.contains(date(year, 12, 25))
        assert not cal.contains(date(year, 12, 23))
    assert cal.contains(date(2026, 7, 4))
    assert len(cal._years) <= 4
