"""Criterion 5 of the reliability suite (short; long: python -m tests.chaos.downtime --long)."""

from __future__ import annotations

import pytest

from tests.chaos.downtime import scenario
from tests.chaos.scenario import stage


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_whole_cluster_downtime_catch_up_matches_each_policy_and_schedules_go_on(tmp_path):
    async with stage(tmp_path, lease_ttl=3) as st:
        result = await scenario(st, cron="*/5 * * * * *", down=10, after=3, lease_ttl=3)
    jobs = {v["policy"]: v for v in result["jobs"]}
    assert all(v["missed_ticks"] >= 10 for v in jobs.values()), jobs
    assert jobs["none"]["runs_for_missed"] == 0, jobs["none"]
    assert jobs["latest"]["runs_for_missed"] == 1, jobs["latest"]
    assert jobs["all"]["runs_for_missed"] == jobs["all"]["missed_ticks"], jobs["all"]
    for verdict in jobs.values():
        assert verdict["duplicates"] == {} and verdict["regular_missed"] == [], verdict
        assert verdict["regular_ticks_after"] >= 2, verdict
        assert verdict["ok"], verdict
    for policy, hist in result["history"].items():
        assert hist["executed_twice"] == {} and hist["phantoms"] == [], (policy, hist)
        assert hist["duplicates"] == {} and hist["ok"], (policy, hist)
