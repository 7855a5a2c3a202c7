"""The waiter's kept upstream slots are bounded by the slots they hold, not only by entries
(review of D296). An editor makes many slots wait on a seconds-cron upstream, each slot with its
own window (``previous_slot``, a duration): every window keeps up to 1000 computed slots, and the
cache kept 4096 windows — ~460 MB of the leader's memory (112 bytes a slot, measured) from one
project's edits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cluster import depends_store
from cluster.depends import window_of
from cluster.models import Job, JobSpec, parse_model

NOW = datetime(2026, 12, 6, 15, tzinfo=UTC)


def test_kept_upstream_slots_stay_under_their_bound(monkeypatch):
    monkeypatch.setattr(depends_store, "EXPECTED_SLOTS_KEPT", 5_000)
    depends_store._EXPECTED.clear()
    depends_store._EXPECTED_SLOTS[0] = 0
    spec = parse_model(
        JobSpec, {"name": "busy", "command": "true", "schedules": [{"cron": "@every 1s"}]}
    )
    busy = Job(**spec.model_dump(), project="p", created_at=NOW, updated_at=NOW,
               active_since=NOW - timedelta(days=30))  # fmt: skip
    for i in range(20):  # twenty waiting slots, each its own 1000-slot window
        window = window_of("1h", NOW - timedelta(hours=i), "UTC", None, busy.active_since)
        slots, cut = depends_store._expected("p", ("job", "busy"), busy, window)
        assert len(slots) == 1000 and cut
        kept = sum(len(v[0]) for v in depends_store._EXPECTED.values())
        assert kept <= 5_000, (i, kept)
        assert kept == depends_store._EXPECTED_SLOTS[0]
    # a window looked at again right after is kept (the cache still serves its purpose)
    again = depends_store._expected("p", ("job", "busy"), busy, window)
    assert again is depends_store._EXPECTED[next(reversed(depends_store._EXPECTED))]
