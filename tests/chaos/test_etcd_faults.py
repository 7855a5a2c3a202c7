"""Criterion 3 of the reliability suite (short; long: python -m tests.chaos.etcd_faults)."""

from __future__ import annotations

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from tests.chaos.etcd_faults import scenario
from tests.chaos.harness import EtcdCluster
from tests.conftest import ProcessCluster


@pytest.mark.slow
@pytest.mark.timeout(170)
async def test_etcd_member_kill_pause_and_quorum_loss_no_duplicates_outage_caught_up(
    prefix, tmp_path
):
    etcd_cluster = EtcdCluster(tmp_path).start()
    cluster = ProcessCluster(etcd_cluster.endpoints, prefix, tmp_path)
    try:
        for i in range(3):
            cluster.start(f"node-{i + 1}", lease_ttl=5)
        async with Etcd(etcd_cluster.endpoints) as etcd:
            result = await scenario(
                cluster, etcd_cluster, etcd, Keys(prefix), tmp_path / "history", rounds=1
            )
    finally:
        cluster.close()
        etcd_cluster.stop()
    report, hist = result["report"], result["history"]
    assert [f["fault"] for f in result["faults"]] == [
        "kill-leader",
        "pause",
        "kill (no quorum)",
        "kill (no quorum)",
    ]
    assert result["nodes_alive"] == ["node-1", "node-2", "node-3"]
    assert report.ticks >= 15
    assert report.duplicates == {}, report.as_dict()
    assert report.missed == [], report.as_dict()
    assert report.lost_final == [] and report.unfinished == [], report.as_dict()
    # No tick has two committed successful executions; every success is backed by its execution.
    assert hist.duplicates == {} and hist.phantoms == [], hist.as_dict()
