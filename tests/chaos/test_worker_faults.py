"""Criterion 2 of the reliability suite (short version; long: python -m tests.chaos.worker_faults)."""

from __future__ import annotations

import pytest

from tests.chaos.scenario import Stage
from tests.chaos.worker_faults import scenario


@pytest.mark.slow
@pytest.mark.timeout(200)
async def test_killed_or_frozen_worker_run_retried_elsewhere_stale_worker_commits_nothing(
    procs, etcd, keys, tmp_path
):
    for i in range(3):
        procs.start(f"node-{i + 1}", lease_ttl=2)
    st = Stage(procs, etcd, keys, tmp_path / "history")
    # kill, late stop, early stop; 8 s of work: an early-frozen node's job would outlive its
    # lease (TTL 2) by seconds unless its fence kills it
    result = await scenario(st, trials=3, work=8)
    assert result["failures"] == [], result
    hist = result["history"]
    assert hist["duplicates"] == {} and hist["phantoms"] == [], result
    assert hist["executed_twice"] == {} and hist["ok"], result
    assert hist["committed_successes"] == 3
    # The late-frozen worker's process ran to its end (the scenario waits for its end line before
    # SIGCONT), but its claim was gone: its result was refused, nothing of it committed. The
    # SIGKILLed node's and the early-frozen node's processes were killed (D151, D152): stale,
    # not fenced.
    fenced = {x.split("@")[0] for x in result["fenced"]}
    frozen = {f["run"] for f in result["faults"] if f["fault"] == "stop"}
    assert frozen and frozen <= fenced <= {f["run"] for f in result["faults"]}, result
    # No two attempts of a run overlap in time, the early-frozen one included (D152).
    overlap = result["overlap"]
    assert overlap["overlaps"] == [] and overlap["runs_with_retries"] == 3, result
