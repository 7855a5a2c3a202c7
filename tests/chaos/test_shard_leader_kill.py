"""The leader-kill chaos scenario per shard (short; long: python -m tests.chaos.shard_leader_kill)."""

from __future__ import annotations

import pytest

from tests.chaos.scenario import stage
from tests.chaos.shard_leader_kill import scenario


@pytest.mark.slow
@pytest.mark.timeout(420)  # the storm may run 120 s past its 30 s to make its kills (D373)
async def test_shard_leader_kill_storm_every_tick_of_every_job_exactly_once(tmp_path):
    ttl = 3
    async with stage(tmp_path, lease_ttl=ttl) as st:
        result = await scenario(st, duration=30, every=4, lease_ttl=ttl, every_shard=True)
    kills = result["faults"]
    assert len(kills) >= 4 and {k["shard"] for k in kills} == {0, 1, 2, 3}, kills
    # every killed shard got a new leader: the dead lease's TTL plus the successor's reaction
    assert all(k["failover_s"] is not None and k["failover_s"] <= ttl + 3 for k in kills), kills
    for name, report in result["reports"].items():
        hist = result["histories"][name]
        assert report.ticks >= 29, (name, report.as_dict())
        assert report.duplicates == {} and report.missed == [], (name, report.as_dict())
        assert report.lost_final == [] and report.unfinished == [], (name, report.as_dict())
        assert hist.duplicates == {} and hist.phantoms == [], (name, hist.as_dict())
        assert hist.executed_twice == {} and hist.ok, (name, hist.as_dict())
        assert report.largest_gap <= ttl + 2, (name, report.as_dict())
