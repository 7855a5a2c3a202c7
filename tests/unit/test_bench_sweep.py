"""The arithmetic of bench.run's newer scenarios (plain values; no node, no etcd): the burst's
one-tick cron, the table rows of the rate sweep, bursts and fail-over, the plots, and the
sharding model of bench.shardsim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench import shardsim
from bench.burst_failover import cron_at, next_at_second
from bench.plots import plot
from bench.run import more_rows
from cluster.cron import parse_schedule

T0 = 1_800_000_000


def test_the_burst_instant_is_the_next_whole_second_of_the_chosen_second_of_minute():
    assert next_at_second(120.0, 0) == 120.0
    assert next_at_second(120.5, 0) == 180.0
    assert next_at_second(125.0, 10) == 130.0
    assert next_at_second(131.0, 10) == 190.0


def test_cron_at_names_exactly_the_instant():
    instant = float(T0 + 37)
    sched = parse_schedule(cron=cron_at(instant), timezone="UTC")
    before = datetime.fromtimestamp(instant, UTC) - timedelta(seconds=30)
    first = sched.next_after(before)
    assert first is not None and first.timestamp() == instant
    later = sched.next_after(first)
    assert later is None or later.timestamp() - instant > 86_400


def lag_doc(n: int, succeeded: int, p99: float) -> dict:
    return {
        "start_lag": {"p50_ms": p99 / 2, "p99_ms": p99},
        "cpu": {"node_plus_etcd_ms_per_run": 7.0},
        "succeeded": succeeded,
        "expected_ticks": n * 10,
        "missed_ticks": 0,
    }


def test_sweep_rows_say_when_a_level_is_overloaded():
    rows = more_rows({"lag_500": lag_doc(500, 900, float("nan")), "lag_50": lag_doc(50, 500, 30)})
    by_metric = {r[0]: r for r in rows}
    over = by_metric["lag at 500 runs/s: p50 / p99, missed, CPU per run"]
    assert over[2].startswith("overloaded: 900 of 5000") and over[3] == "misses"
    fine = by_metric["lag at 50 runs/s: p50 / p99, missed, CPU per run"]
    assert fine[2].startswith("15.0 / 30.0 ms") and fine[3] == ""


def test_burst_and_failover_rows_against_their_goals():
    results = {
        "burst_1000": {
            "all_started_s": 0.8,
            "missed": 0,
            "duplicates": 0,
            "start_offset": {"p50_ms": 400.0},
        },
        "burst_5000": {
            "all_started_s": None,
            "missed": 3,
            "duplicates": 0,
            "start_offset": {"p50_ms": 900.0},
        },
        "failover": {
            "lease_ttl_s": 5,
            "resume_after_kill": {"count": 10, "p50_ms": 4600.0, "p99_ms": 6400.0},
            "resume_after_stop": {"count": 3, "max_ms": 300.0},
            "missed": 0,
            "duplicates": 0,
            "ticks_due": 900,
            "late_runs": 40,
        },
    }
    verdicts = {r[0]: r[3] for r in more_rows(results)}
    assert verdicts["burst: 1000 jobs due in the same second, all started within"] == "meets"
    assert verdicts["burst: 5000 jobs due in the same second, all started within"] == "misses"
    kill = "leader SIGKILL (TTL 5 s): scheduling resumed, p50 / p99"
    assert verdicts[kill] == "misses"  # 6.4 s > 6 s
    assert verdicts["leader stopped gracefully: hand-off"] == "meets"


def test_plot_writes_a_png_when_the_document_has_samples(tmp_path):
    doc = {"start_lag_ms_sample": [1.0, 2.0, 5.0, 40.0], "started_per_s": [100, 99, 101]}
    path = plot("lag_100", doc, tmp_path)
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot("etcd_per_run", {"runs": 3}, tmp_path) is None


def test_rendezvous_placement_moves_only_the_dead_nodes_shards():
    p = shardsim.placement(4, 64, balanced=False)
    # every shard a node did not lead keeps its leader: on average 1/N of them move
    assert p.moved_when_one_dies == pytest.approx(0.25, abs=1e-3)
    assert 16 <= p.max_shards_per_node <= 32
    # balanced (D395: shard 0 weighing the per-cluster loops): a few more move
    assert 0.25 <= shardsim.placement(4, 64).moved_when_one_dies <= 0.4
    one = shardsim.placement(1, 16)
    assert one.max_shards_per_node == 16 and one.moved_when_one_dies == 0


def test_capacity_grows_with_nodes_and_shards_until_etcd_bounds_it():
    costs = {"leader_ms": 2.0, "worker_ms": 5.0, "etcd_ms": 1.0}
    one = shardsim.capacity(1, 1, **costs)
    assert one == pytest.approx(1000 / 7.0, rel=0.01)
    four = shardsim.capacity(4, 16, **costs)
    assert four > 3 * one
    assert shardsim.capacity(64, 64, **costs, etcd_cores=2.0) == pytest.approx(2000.0)


def test_log_rows_use_runs_whose_object_is_in_s3():
    logs = {
        "shipping": {"shipping_mib_s": 53.7},
        "small_logs": {"created_per_s": 63.6, "runs_with_log_in_s3_per_s": 42.6},
    }
    rows = {r[0]: r for r in more_rows({"logs": logs})}
    assert rows["log shipping to S3, one node"][3] == "meets"
    small = rows["short runs with their logs shipped to S3"]
    assert small[2] == "42.6 runs/s" and small[3] == "misses"


def test_leader_ms_counts_the_decodings_a_leaders_worker_was_spared():
    """D481: a K = 1 leader's worker decodes none of its own runs' queue entries (D352) where a
    follower's decodes all: its leader ms gets them back, as each K = 8 node gets back its
    share, so the two are compared like with like."""
    from bench.shardbench import leader_ms

    k1 = {"node_cpu_ms_per_tick": [0.13, 0.36, 0.12], "node_fired_share": [0.0, 1.0, 0.0]}
    k8 = {"node_cpu_ms_per_tick": [0.21, 0.25, 0.21], "node_fired_share": [0.08, 0.55, 0.37]}
    for row in (k1, k8):
        row["decode_ms_per_entry"] = 0.02
    assert leader_ms(k1, 0.125) == [0.005, 0.255, -0.005]
    assert leader_ms(k8, 0.125) == [0.087, 0.136, 0.092]
