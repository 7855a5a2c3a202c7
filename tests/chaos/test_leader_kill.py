"""Criterion 1 of the reliability suite (short; long: python -m tests.chaos.leader_kill)."""

from __future__ import annotations

import pytest

from tests.chaos.leader_kill import scenario
from tests.chaos.scenario import stage


@pytest.mark.slow
@pytest.mark.timeout(360)  # the storm may run 120 s past its 30 s to make its kills (D373)
async def test_leader_kill_storm_every_tick_exactly_once_gaps_within_ttl(tmp_path):
    ttl = 3
    async with stage(tmp_path, lease_ttl=ttl) as st:
        result = await scenario(st, duration=30, every=5, lease_ttl=ttl, min_kills=4)
    report, hist = result["report"], result["history"]
    assert len(result["faults"]) >= 4, result["faults"]
    assert report.ticks >= 29
    assert report.duplicates == {}, report.as_dict()
    assert report.missed == [], report.as_dict()
    assert report.lost_final == [] and report.unfinished == [], report.as_dict()
    assert hist.duplicates == {} and hist.phantoms == [], hist.as_dict()
    # and no tick executed twice beyond what the retry policy re-runs (lost attempts)
    assert hist.executed_twice == {} and hist.ok, hist.as_dict()
    assert report.largest_gap <= ttl + 2, report.as_dict()
