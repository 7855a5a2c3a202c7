"""Quota decisions (cluster/quotas.py) with plain numbers."""

from __future__ import annotations

import pytest

from cluster.errors import InvalidInput
from cluster.quotas import Quotas, exceeded, parse_overrides

LIMITS = Quotas(jobs=3, workflows=2, bytes=1000)


@pytest.mark.parametrize(
    ("kind", "count", "total", "creating", "old", "new", "want"),
    [
        ("job", 2, 0, True, 0, 10, None),  # the third job fits
        ("job", 3, 0, True, 0, 10, "jobs"),  # a fourth does not
        ("workflow", 2, 0, True, 0, 10, "workflows"),
        ("workflow", 1, 0, True, 0, 10, None),
        ("job", 3, 990, False, 100, 120, "bytes"),  # an update that grows past the bytes
        ("job", 3, 990, False, 100, 100, None),  # same size: always allowed
        ("job", 3, 5000, False, 100, 50, None),  # over a lowered quota: shrinking is allowed
        ("job", 3, 5000, False, 100, 100, None),
        ("job", 0, 900, True, 0, 100, None),  # exactly at the limit
        ("job", 0, 901, True, 0, 100, "bytes"),
        ("job", 0, 0, True, 0, 0, None),
    ],
)
def test_exceeded(kind, count, total, creating, old, new, want):
    got = exceeded(
        LIMITS,
        kind,
        count=count,
        total_bytes=total,
        creating=creating,
        old_size=old,
        new_size=new,
    )
    assert got == want


def test_zero_quota_forbids_creating():
    assert (
        exceeded(
            Quotas(jobs=0), "job", count=0, total_bytes=0, creating=True, old_size=0, new_size=1
        )
        == "jobs"
    )


def test_overrides_merge_and_validate():
    assert Quotas().overridden({"jobs": 5}).jobs == 5
    assert Quotas().overridden({"jobs": -1, "nope": 3}) == Quotas()  # stored junk is ignored
    assert parse_overrides({"jobs": 5, "bytes": None}) == {"jobs": 5}
    assert parse_overrides(None) == {}
    for bad, field in (
        ({"jobs": -1}, "quotas.jobs"),
        ({"jobs": True}, "quotas.jobs"),
        ({"bytes": 1.5}, "quotas.bytes"),
        ({"runs": 1}, "quotas"),
        ([1], "quotas"),
    ):
        with pytest.raises(InvalidInput) as err:
            parse_overrides(bad)
        assert err.value.field == field
