"""Criterion 8 of the reliability suite (short; long: python -m tests.chaos.soak --minutes 30)."""

from __future__ import annotations

import pytest

from tests.chaos.scenario import stage
from tests.chaos.soak import scenario


@pytest.mark.slow
@pytest.mark.timeout(600)  # + up to a minute before the first prune (D378)
async def test_steady_load_etcd_and_node_memory_plateau_every_tick_once(tmp_path):
    async with stage(tmp_path, lease_ttl=5, compaction="20s") as st:
        result = await scenario(st, minutes=2.5, jobs=20, every=5)
    report = result["report"]
    assert report.ticks >= 14 and report.duplicates == {} and report.missed == [], report.as_dict()
    assert result["not_fired"] == [], result["not_fired"]
    hist = result["history"]
    assert hist.executions >= 14 and hist.executed_twice == {} and hist.ok, hist.as_dict()
    for name, verdict in result["plateau"].items():
        assert verdict["last_max"] > 0, (name, result["samples"][name])  # really measured
        # every sample, spelled out (a tuple's repr is cut short in the report)
        assert verdict["ok"], f"{name}: {verdict}; samples {result['samples'][name]}"
