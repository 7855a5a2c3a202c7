"""Budgets' pure decisions (D274-D279): window arithmetic, which budgets a run joins, slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cluster.budgets import (
    BudgetSpec,
    StartsLimit,
    Window,
    admit_start,
    check,
    free_slot,
    joined,
    retry_in,
    window_start,
)
from cluster.errors import InvalidInput
from cluster.models import parse_model

T = datetime(2026, 3, 29, 0, 59, 59, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "seconds", "start"),
    [
        (T, 60, datetime(2026, 3, 29, 0, 59, tzinfo=UTC)),
        (T, 3600, datetime(2026, 3, 29, 0, 0, tzinfo=UTC)),
        (T, 86400, datetime(2026, 3, 29, tzinfo=UTC)),  # a UTC day, whatever the DST change
        (T, 1, datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC)),
        (T, 7, datetime.fromtimestamp(T.timestamp() // 7 * 7, UTC)),
        (datetime(2026, 1, 1, tzinfo=UTC), 60, datetime(2026, 1, 1, tzinfo=UTC)),  # on the edge
        (datetime(1970, 1, 1, tzinfo=UTC), 86400, datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_window_start(now: datetime, seconds: int, start: datetime) -> None:
    assert window_start(now, seconds) == int(start.timestamp())


def test_a_window_in_another_zone_is_the_same_instant() -> None:
    other = T.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert window_start(other, 3600) == window_start(T, 3600)


def test_admit_counts_up_to_the_limit_then_names_the_next_window() -> None:
    lim = StartsLimit(per="minute", limit=3)
    w: Window | None = None
    for n in (1, 2, 3):
        v = admit_start(w, lim, T)
        assert v.ok and v.window.count == n
        w = v.window
    v = admit_start(w, lim, T)
    assert not v.ok
    assert v.next_at == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    # the next window starts empty: the stored one is stale, nothing to clean up
    v = admit_start(w, lim, T + timedelta(seconds=1))
    assert v.ok and v.window.count == 1
    assert v.window.start == int(datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp())


def test_seconds_as_a_window() -> None:
    lim = StartsLimit(per=5, limit=1)
    v = admit_start(None, lim, T)
    assert v.ok
    v2 = admit_start(v.window, lim, T)
    assert not v2.ok and v2.next_at is not None
    assert 0 < (v2.next_at - T).total_seconds() <= 5


def test_check_says_why() -> None:
    b = BudgetSpec(name="api", concurrent=3, starts=StartsLimit(per="minute", limit=10))
    assert check("api", b, 2, None, T, "p") is None
    w = check("api", b, 3, None, T, "p")
    assert w is not None and w.reason == "budget api: 3/3 running" and w.next_at is None
    assert retry_in(w, T) is None  # a slot: the watch wakes it, no timer
    full = Window(start=window_start(T, 60), count=10)
    w = check("api", b, 0, full, T, "p")
    assert w is not None
    assert w.reason.startswith("budget api: 10/10 starts per minute, next start allowed at 2026")
    assert retry_in(w, T) == pytest.approx(0.5)


def test_joined_by_name_and_by_tag() -> None:
    budgets = {
        "a": BudgetSpec(name="a", concurrent=1),
        "b": BudgetSpec(name="b", concurrent=1, match={"tags": ["etl", "x"]}),
        "c": BudgetSpec(name="c", concurrent=1, match={"tags": ["other"]}),
    }
    assert joined(budgets, ["a"], [], "p") == ["a"]
    assert joined(budgets, [], ["etl"], "p") == ["b"]
    assert joined(budgets, ["a", "b"], ["etl", "x"], "p") == ["a", "b"]
    assert joined(budgets, ["gone"], ["nothing"], "p") == []


def test_a_budget_closed_to_a_project() -> None:
    """A tag joins only budgets open to the project; a name joins, and the run is held back
    (the limit is never silently dropped when a cluster admin closes the budget)."""
    b = BudgetSpec(name="b", concurrent=5, match={"tags": ["etl"]}, projects=["team-a"])
    assert joined({"b": b}, [], ["etl"], "team-b") == []
    assert joined({"b": b}, [], ["etl"], "team-a") == ["b"]
    assert joined({"b": b}, ["b"], [], "team-b") == ["b"]
    w = check("b", b, 0, None, T, "team-b")
    assert w is not None and w.reason == "budget b: not open to project team-b"
    assert check("b", b, 0, None, T, "team-a") is None


def test_free_slot() -> None:
    assert free_slot(3, []) == 0
    assert free_slot(3, [0, 2]) == 1
    assert free_slot(2, [0, 1]) is None
    assert free_slot(2, [5]) == 0  # a slot above a lowered limit does not block the low ones


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"name": "x"}, None),  # neither limit
        ({"name": "x", "concurrent": 0}, "concurrent"),
        ({"name": "x", "concurrent": 1001}, "concurrent"),
        ({"name": "x", "starts": {"per": "week", "limit": 1}}, "starts.per"),
        ({"name": "x", "starts": {"per": 0, "limit": 1}}, "starts.per"),
        ({"name": "x", "starts": {"per": "minute", "limit": 0}}, "starts.limit"),
        ({"name": "x", "concurrent": 1, "match": {"tags": []}}, "match.tags"),
        ({"name": "X!", "concurrent": 1}, "name"),
        ({"name": "x", "concurrent": 1, "extra": 1}, "extra"),
        ({"name": "x", "concurrent": 1, "projects": []}, "projects"),
        ({"name": "x", "concurrent": 1, "projects": ["Bad!"]}, "projects.0"),
    ],
)
def test_bad_documents_name_the_field(doc: dict[str, object], field: str | None) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_model(BudgetSpec, doc)
    if field is not None:
        assert err.value.field is not None and err.value.field.startswith(field)
