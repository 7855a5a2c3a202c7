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
    result = await scenario(st, trials=2, work=3)
    assert result["failures"] == [], result
    hist = result["history"]
    assert hist["duplicates"] == {} and hist["phantoms"] == [], result
    assert hist["executed_twice"] == {} and hist["ok"], result
    assert hist["committed_successes"] == 2
    # The frozen worker's process ran to its end (the scenario waits for its end line before
    # SIGCONT), but its claim was gone: its result was refused, nothing of it committed. (The
    # SIGKILLed node's orphaned process may also run to its end: fenced too. Executions killed
    # before their end are stale, not fenced.)
    fenced = {x.split("@")[0] for x in result["fenced"]}
    frozen = {f["run"] for f in result["faults"] if f["fault"] == "stop"}
    assert frozen and frozen <= fenced <= {f["run"] for f in result["faults"]}, result
