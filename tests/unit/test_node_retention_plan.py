"""Which node records the leader marks or forgets (D255): pure, with plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cluster.noderetention import down_since, held, sweep, sweep_every

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DAY = 86400.0


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat()


def test_live_nodes_are_never_touched_and_dead_ones_get_a_time_first():
    records = {"up": {"stopped_at": ago(10 * DAY)}, "died": {}, "stopped": {"stopped_at": ago(5)}}
    plan = sweep(records, {"up"}, NOW, DAY)
    assert (plan.mark, plan.forget) == (["died"], [])


@pytest.mark.parametrize(
    ("record", "forgotten"),
    [
        ({"stopped_at": ago(DAY)}, True),  # exactly the retention
        ({"stopped_at": ago(DAY - 1)}, False),
        ({"down_since": ago(DAY + 60)}, True),
        ({"down_since": ago(60)}, False),
        ({"stopped_at": ago(2 * DAY), "down_since": ago(60)}, True),  # the earlier one counts
        ({"stopped_at": "yesterday"}, False),  # unreadable: marked instead
        ({"stopped_at": ago(2 * DAY).replace("+00:00", "")}, True),  # no zone: UTC
    ],
)
def test_forgotten_once_down_for_the_retention(record, forgotten):
    plan = sweep({"n": record}, set(), NOW, DAY)
    assert plan.forget == (["n"] if forgotten else [])


def test_retention_zero_keeps_every_node():
    plan = sweep({"n": {"stopped_at": ago(100 * DAY)}, "m": {}}, set(), NOW, 0)
    assert (plan.mark, plan.forget) == ([], [])


def test_down_since_and_sweep_interval():
    assert down_since({}) is None and down_since({"down_since": 5}) is None
    assert down_since({"stopped_at": ago(3)}) == NOW - timedelta(seconds=3)
    assert sweep_every(DAY) == 300 and sweep_every(2) == 1 and sweep_every(60) == 15


def test_a_node_an_operator_disabled_or_drained_is_never_forgotten():
    """D281: the sweep used to delete a disabled node's admin state after a day down, so the
    machine took runs again the next time it booted."""
    records = {n: {"stopped_at": ago(30 * DAY)} for n in ("off", "drain", "on", "bad", "plain")}
    states = {
        "off": {"admin": "disabled"},
        "drain": {"admin": "draining", "reason": "disk"},
        "on": {"admin": "enabled"},
        "bad": {"admin": 7},
    }
    kept = {n for n, s in states.items() if held(s)}
    assert kept == {"off", "drain", "bad"}
    assert not held(None) and not held({}) and not held({"disconnect": True})
    plan = sweep(records, set(), NOW, DAY, kept)
    assert plan.forget == ["on", "plain"]
    # a kept node that died without a stop time still gets one (listed down since then)
    assert sweep({"off": {}}, set(), NOW, DAY, {"off"}).mark == ["off"]
