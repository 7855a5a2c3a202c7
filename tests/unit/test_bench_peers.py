"""The arithmetic of the side-by-side benchmark (bench/peers/measure.py): grid attribution, lag,
misses, duplicates, bursts, DAG edges, ratios and the table. Plain values; no peer is imported."""

from __future__ import annotations

import sys

import pytest

from bench.peers import measure

T0 = 1_800_000_000  # a whole second


def test_periodic_attributes_each_start_to_its_second_and_measures_lag_from_the_grid():
    starts = [("a", T0 + 0.010), ("b", T0 + 0.030), ("a", T0 + 1.020), ("b", T0 + 1.040)]
    out = measure.periodic(starts, ["a", "b"], T0, T0 + 2)
    assert out["expected_ticks"] == 4
    assert out["runs"] == 4
    assert out["missed_ticks"] == 0
    assert out["duplicate_ticks"] == 0
    assert out["started_per_s"] == 2.0
    assert out["start_lag"]["count"] == 4
    assert out["start_lag"]["max_ms"] == pytest.approx(40.0, abs=0.01)
    assert out["start_lag"]["p50_ms"] == pytest.approx(25.0, abs=0.01)


def test_periodic_counts_misses_duplicates_and_ignores_what_lies_outside_the_window():
    starts = [
        ("a", T0 - 0.5),  # before the window
        ("a", T0 + 0.1),
        ("a", T0 + 0.9),  # a second start in the same second: duplicate
        ("b", T0 + 1.2),  # b missed T0
        ("a", T0 + 2.1),  # after the window
        ("zzz", T0 + 0.1),  # not one of the jobs
    ]
    out = measure.periodic(starts, ["a", "b"], T0, T0 + 2)
    assert out["runs"] == 3
    assert out["missed_ticks"] == 2  # a at T0+1, b at T0
    assert out["duplicate_ticks"] == 1
    assert out["extra_runs"] == 1


def test_a_start_more_than_a_second_late_counts_as_a_miss_and_a_duplicate():
    # the run of T0 starts at T0 + 1.3, the run of T0 + 1 on time
    starts = [("a", T0 + 1.3), ("a", T0 + 1.01)]
    out = measure.periodic(starts, ["a"], T0, T0 + 2)
    assert (out["missed_ticks"], out["duplicate_ticks"]) == (1, 1)
    assert out["start_lag"]["max_ms"] < 1000


def test_a_level_is_sustained_at_95_percent_of_the_offered_runs():
    assert measure.sustained({"runs": 950, "window_s": 10}, 100)
    assert not measure.sustained({"runs": 949, "window_s": 10}, 100)
    best = measure.best_sustained(
        [
            {"jobs": 200, "sustained": True, "started_per_s": 199.0},
            {"jobs": 500, "sustained": False, "started_per_s": 410.0},
        ]
    )
    assert best == {
        "max_sustained_per_s": 199.0,
        "max_sustained_offered": 200,
        "peak_started_per_s": 410.0,
    }


def test_burst_reports_when_all_started_only_when_none_is_missing():
    due = float(T0)
    full = measure.burst([("a", due + 0.2), ("b", due + 0.7)], ["a", "b"], due)
    assert (full["started"], full["missed"], full["duplicates"]) == (2, 0, 0)
    assert full["first_start_s"] == 0.2
    assert full["all_started_s"] == 0.7
    partial = measure.burst([("a", due + 0.2), ("a", due + 0.3), ("c", due)], ["a", "b"], due)
    assert (partial["started"], partial["missed"], partial["duplicates"]) == (1, 1, 1)
    assert partial["all_started_s"] is None
    early = measure.burst([("a", due - 0.1)], ["a"], due)
    assert early["early_starts"] == 1


def test_dag_chain_edges_and_fanout_from_stamps():
    stamps = {"c0": (10.0, 10.5), "c1": (10.6, 11.0), "c2": (11.3, 11.4)}
    assert measure.chain_edges(stamps, 3) == pytest.approx([0.1, 0.3])
    fan = {"root": (0.0, 1.0), "l0": (1.2, 1.5), "l1": (1.4, 2.0), "join": (2.5, 2.6)}
    out = measure.fanout(fan, 2)
    assert out["root_end_to_last_leaf_start"]["max_ms"] == pytest.approx(400.0)
    assert out["last_leaf_end_to_join_start"]["max_ms"] == pytest.approx(500.0)
    assert measure.dag_metrics({"edge_latency": {"p50_ms": 5.0, "p99_ms": 9.0}}, None) == {
        "dag_edge_p50_ms": 5.0,
        "dag_edge_p99_ms": 9.0,
        "fanout_last_leaf_ms": None,
    }


def test_metrics_come_out_of_the_result_documents_of_both_sides():
    cm = measure.cronmesh_metrics(
        {
            "lag_100": {"start_lag": {"p50_ms": 8.0, "p99_ms": 30.0}, "missed_ticks": 0,
                        "duplicate_ticks": 0},
            "cpu_per_run": {"node_plus_etcd_ms_per_run": 1.2},
            "e2e_throughput": {"max_sustained_per_s": 800.0},
        }
    )  # fmt: skip
    assert cm["lag_p50_ms"] == 8.0
    assert cm["cpu_ms_per_run"] == 1.2
    assert cm["sustained_per_s"] == 800.0
    assert cm["burst_1000_all_started_s"] is None
    peer = measure.peer_metrics(
        {
            "lag_100": {"start_lag": {"p50_ms": 80.0, "p99_ms": 150.0}, "missed_ticks": 3,
                        "duplicate_ticks": 1, "cpu": {"ms_per_run": 2.4}},
            "throughput": {"max_sustained_per_s": 400.0},
            "burst_1000": {"error": "not ready"},
        }
    )  # fmt: skip
    assert peer["lag_p99_ms"] == 150.0
    assert peer["cpu_ms_per_run"] == 2.4
    assert peer["burst_1000_missed"] is None


def test_ratios_are_cronmesh_over_peer_and_say_who_is_ahead():
    assert measure.ratio(10.0, 40.0) == 0.25
    assert measure.ratio(0, 0) is None
    assert measure.ratio(None, 3.0) is None
    rows = measure.comparison_rows(
        {"lag_p50_ms": 10.0, "sustained_per_s": 800.0, "missed_100": 0},
        {"celery": {"lag_p50_ms": 40.0, "sustained_per_s": 1000.0, "missed_100": 0}},
    )
    by_metric = {r[0]: r for r in rows}
    lag = by_metric["lag p50 at 100 runs/s (ms)"]
    assert lag[1:] == ("celery", "40", "10", "0.25", "cronmesh")  # lower is better
    thr = by_metric["sustained trivial runs/s"]
    assert thr[4:] == ("0.80", "celery")  # higher is better
    missed = by_metric["missed ticks at 100 runs/s"]
    assert missed[4:] == ("—", "same")
    unknown = by_metric["CPU per run, scheduler processes (ms)"]
    assert unknown[2:] == ("—", "—", "—", "")


def test_table_aligns_columns():
    text = measure.format_table([("a", "bb"), ("ccc", "d")], head=("x", "y"))
    lines = text.splitlines()
    assert len({len(line.rstrip()) for line in lines if set(line) <= {"-", " "}}) == 1
    assert lines[1].startswith("x    y")
    assert lines[3] == "a    bb"
    assert lines[4].startswith("ccc  d")


def test_the_product_environment_never_imports_a_peer():
    import bench.peers
    import bench.peers.main  # noqa: F401

    assert not {"celery", "apscheduler", "airflow"} & set(sys.modules)
