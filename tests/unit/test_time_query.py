"""The one parser of a time in a query (``from``/``to`` of the ticks listing and of the archived
runs listing, which had a looser copy of their own): ISO 8601, UTC when no zone is named, and a
400 naming the parameter for text that is no time or a year outside 1970..9998."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from aiohttp.test_utils import make_mocked_request

from cluster.errors import InvalidInput
from nodes.api.http import time_query


def _parsed(value: str | None, name: str = "from") -> datetime | None:
    query = "" if value is None else f"?{name}={quote(value)}"
    return time_query(make_mocked_request("GET", f"/x{query}"), name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("2026-12-07T06:00:00Z", datetime(2026, 12, 7, 6, tzinfo=UTC)),
        ("2026-12-07T06:00:00", datetime(2026, 12, 7, 6, tzinfo=UTC)),  # no zone: UTC
        (" 2026-12-07T06:00:00Z ", datetime(2026, 12, 7, 6, tzinfo=UTC)),
        (
            "2026-12-07T07:00:00+01:00",
            datetime(2026, 12, 7, 7, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_time_or_nothing_is_read(value: str | None, expected: datetime | None) -> None:
    got = _parsed(value)
    assert got == expected
    assert got is None or got.tzinfo is not None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "must be an ISO 8601 time"),
        ("2026-13-01T00:00:00Z", "must be an ISO 8601 time"),
        ("0001-01-01T00:00:00+14:00", "before 1970"),
        ("1960-01-01T00:00:00Z", "before 1970"),
        # past the ids' range: the archived listing made a 22-digit bound of it and answered 200
        ("9999-12-31T23:59:59-14:00", "after 9998"),
    ],
)
@pytest.mark.parametrize("name", ["from", "to"])
def test_bad_times_are_a_400_naming_the_parameter(value: str, message: str, name: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        _parsed(value, name)
    assert caught.value.field == name and caught.value.status == 400
