"""Criterion 3 of the reliability suite (short; long: python -m tests.chaos.etcd_faults)."""

from __future__ import annotations

import asyncio

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from tests.chaos.etcd_faults import scenario
from tests.chaos.harness import EtcdCluster, lease_losses, wait_all_ready
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


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="known bug (issue 9 report): the etcd client's gRPC channel stays on a frozen member "
    "(TCP open, no answers) instead of failing over, so every node loses its lease while one of "
    "three members is paused although the cluster keeps its quorum",
)
async def test_one_paused_etcd_member_costs_no_node_its_lease(prefix, tmp_path):
    etcd_cluster = EtcdCluster(tmp_path).start()
    cluster = ProcessCluster(etcd_cluster.endpoints, prefix, tmp_path)
    try:
        for i in range(3):
            cluster.start(f"node-{i + 1}", lease_ttl=3)
        await wait_all_ready(cluster)
        before = lease_losses(cluster)
        etcd_cluster.pause(0)  # the first endpoint every node was given; quorum is kept
        try:
            await asyncio.sleep(8)  # well over the lease TTL: a stuck node would have lost it
        finally:
            etcd_cluster.resume(0)
        assert lease_losses(cluster) == before
    finally:
        cluster.close()
        etcd_cluster.stop()
