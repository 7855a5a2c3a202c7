"""Which finished runs leave etcd (count and age), as a pure decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cluster.ids import id_floor
from cluster.retention import expired_runs

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def made(days_ago: float, n: int = 0) -> str:
    return str(int(id_floor(NOW - timedelta(days=days_ago))) + n).zfill(19)


IDS = [made(10), made(5), made(2), made(1), made(0.5)]


@pytest.mark.parametrize(
    ("keep", "keep_days", "active", "expected"),
    [
        (10, 0, set(), []),
        (3, 0, set(), IDS[:2]),
        (3, 0, {IDS[0]}, IDS[1:2]),  # a run still active is never archived
        (10, 3, set(), IDS[:2]),  # older than 3 days
        (4, 1.5, set(), IDS[:3]),  # both limits: the union
        (1, 0, set(), IDS[:4]),
    ],
)
def test_expired_runs(keep, keep_days, active, expected):
    assert expired_runs(IDS, keep=keep, keep_days=keep_days, now=NOW, active=active) == expected


def test_expired_runs_is_bounded_per_call():
    ids = [made(1, i) for i in range(50)]
    assert expired_runs(ids, keep=1, keep_days=0, now=NOW, limit=10) == sorted(ids)[:10]
