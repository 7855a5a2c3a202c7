"""Criterion 4 of the reliability suite (short; long: python -m tests.chaos.unknown_outcomes)."""

from __future__ import annotations

import pytest

from tests.chaos.harness import TcpProxy
from tests.chaos.scenario import Stage
from tests.chaos.unknown_outcomes import scenario
from tests.conftest import ProcessCluster


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_lost_replies_and_cut_connections_never_duplicate_a_tick(
    etcd_server, etcd, keys, prefix, tmp_path
):
    proxy = await TcpProxy("127.0.0.1", etcd_server.client_port, seed=7).start()
    cluster = ProcessCluster([proxy.endpoint], prefix, tmp_path)
    try:
        for i in range(3):
            cluster.start(f"node-{i + 1}", lease_ttl=3)
        st = Stage(cluster, etcd, keys, tmp_path / "history")
        result = await scenario(st, [proxy], duration=15, every=0.4)
    finally:
        try:
            cluster.close_and_check()
        finally:
            await proxy.close()
    report, hist = result["report"], result["history"]
    assert result["replies_dropped"] >= 15, result
    assert report.ticks >= 14
    assert report.duplicates == {}, report.as_dict()
    assert report.missed == [], report.as_dict()
    assert report.lost_final == [] and report.unfinished == [], report.as_dict()
    assert hist.executed_twice == {} and hist.phantoms == [], hist.as_dict()
    assert hist.ok, hist.as_dict()
    # The nodes really met unknown outcomes (counted where a claim, completion or tick write
    # raised OutcomeUnknown), not just dropped chunks of keep-alives or watches.
    assert sum(result["outcome_unknown"].values()) >= 1, result["outcome_unknown"]
