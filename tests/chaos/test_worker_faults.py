"""Criterion 2 of the reliability suite (short version; long: python -m tests.chaos.worker_faults)."""

from __future__ import annotations

import pytest

from tests.chaos.scenario import Stage
from tests.chaos.worker_faults import scenario


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_killed_or_frozen_worker_run_retried_elsewhere_stale_worker_commits_nothing(
    procs, etcd, keys, tmp_path
):
    for i in range(3):
        procs.start(f"node-{i + 1}", lease_ttl=2)
    st = Stage(procs, etcd, keys, tmp_path / "history")
    # 8 s of work: a frozen node's job outlives its lease (TTL 2) by seconds unless it is fenced
    result = await scenario(st, trials=2, work=8)
    assert result["failures"] == [], result
    hist = result["history"]
    assert hist["duplicates"] == {} and hist["phantoms"] == [], result
    assert hist["committed_successes"] == 2
    # The frozen worker's process started, but its claim was gone: fenced, not committed.
    assert hist["stale_fenced"] >= 1, result
    # Its fence killed it before its lease expired: no two attempts of a run overlap in time.
    overlap = result["overlap"]
    assert overlap["overlaps"] == [] and overlap["runs_with_retries"] == 2, result
