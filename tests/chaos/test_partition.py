"""Criterion 7 of the reliability suite (short; long: python -m tests.chaos.partition)."""

from __future__ import annotations

import pytest

from tests.chaos.partition import Netns, scenario, unavailable
from tests.chaos.scenario import stage

WHY = unavailable()


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(WHY is not None, reason=f"partition scenario: {WHY}")
async def test_partitioned_node_gives_up_its_work_and_rejoins_without_duplicates(tmp_path):
    ttl = 3
    net = Netns.create()
    try:
        async with stage(tmp_path, nodes=0, lease_ttl=ttl, also_on=net.host_ip) as st:
            result = await scenario(st, net, cut=12, rounds=1, lease_ttl=ttl)
    finally:
        net.delete()
    (rnd,) = result["rounds"]
    assert rnd["was_leader"], rnd  # the node started first leads: the leader is cut off
    assert rnd["gave_lease_up_s"] <= ttl + 1, rnd
    assert rnd["started_while_cut"] == [], rnd
    assert result["killed_on_cut_node"], result  # its running job processes were killed
    report, hist = result["report"], result["history"]
    assert report.duplicates == {} and report.missed == [], report.as_dict()
    assert report.lost_final == [] and report.unfinished == [], report.as_dict()
    assert hist.duplicates == {} and hist.phantoms == [], hist.as_dict()
    # and no tick executed twice beyond what the retry policy re-runs (lost attempts)
    assert hist.executed_twice == {} and hist.ok, hist.as_dict()
    # The cut node's runs were killed before its lease expired and were retried elsewhere:
    # the attempts of each run are disjoint in time (D152).
    overlap = result["overlap"]
    assert overlap["overlaps"] == [] and overlap["runs_with_retries"] >= 1, overlap
