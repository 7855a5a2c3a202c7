"""The node process's collector settings (D138); pure parsing here, the process-wide effect in
a child interpreter so the test process keeps its own collector."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cluster.errors import InvalidInput
from nodes.runtime.gctune import DEFAULT_THRESHOLDS, ENV, parse_thresholds


def test_thresholds_parse_three_non_negative_integers():
    assert parse_thresholds("700,10,10") == (700, 10, 10)
    assert parse_thresholds(" 50000, 100 ,100") == (50000, 100, 100)
    assert parse_thresholds("0,0,0") == (0, 0, 0)  # 0: no automatic collection at all


@pytest.mark.parametrize("bad", ["", "1,2", "1,2,3,4", "a,b,c", "1,-1,1", "1.5,2,3"])
def test_bad_thresholds_name_the_variable(bad):
    with pytest.raises(InvalidInput) as err:
        parse_thresholds(bad)
    assert err.value.field == ENV and ENV in err.value.message


def _child(env_value: str | None) -> list[str]:
    code = (
        "import gc; from nodes.runtime.gctune import tune; env = {}\n"
        + (f"env[{ENV!r}] = {env_value!r}\n" if env_value is not None else "")
        + "print(tune(env)); print(gc.get_threshold()); print(gc.get_freeze_count() > 0)\n"
        + "gc.collect(0); from nodes.metrics import REGISTRY\n"
        + "print(REGISTRY.get_sample_value('cronmesh_gc_pause_seconds_count', {'generation': '0'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.split("\n")


def test_tune_freezes_start_up_sets_thresholds_and_times_collections():
    lines = _child(None)
    assert lines[0] == str(DEFAULT_THRESHOLDS) == lines[1]
    assert lines[2] == "True"  # start-up objects are out of the collector's sight
    assert float(lines[3]) >= 1  # the collection above was timed


def test_the_variable_overrides_the_thresholds():
    assert _child("700,10,10")[1] == "(700, 10, 10)"
