"""The arithmetic of bench/gilspawn.py: the loop's gaps set against the spawns' spans."""

from __future__ import annotations

import pytest

from bench.gilspawn import covered, extra_stall_us, overlaps, summarize, union

GAPS = [(1.0, 2.0), (3.0, 3.5), (10.0, 12.0)]


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        ((0.0, 0.5), 0.0),  # before every gap
        ((0.5, 1.5), 0.5),  # the start of one gap
        ((1.2, 1.4), 0.2),  # inside one gap
        ((1.5, 3.2), 0.7),  # the end of one, the start of another
        ((2.0, 3.0), 0.0),  # exactly between two
        ((0.0, 20.0), 3.5),  # all of them
        ((11.0, 30.0), 1.0),  # the end of the last
        ((13.0, 14.0), 0.0),  # after every gap
    ],
)
def test_overlaps_counts_only_the_gaps_time_inside_each_span(span, expected):
    assert overlaps(GAPS, [span]) == [pytest.approx(expected)]


def test_overlaps_keeps_the_spans_order_and_counts_overlapping_spans_each():
    assert overlaps(GAPS, [(3.0, 4.0), (1.0, 2.0), (1.5, 3.2)]) == pytest.approx([0.5, 1.0, 0.7])


def test_union_merges_overlapping_and_touching_spans():
    assert union([(5.0, 6.0), (1.0, 2.0), (1.5, 3.0), (3.0, 4.0)]) == [(1.0, 4.0), (5.0, 6.0)]
    assert union([]) == []


def test_covered_counts_each_instant_once_when_threads_overlap():
    spans = [(0.5, 1.5), (1.0, 1.8), (1.2, 1.4)]  # three threads in one gap at once
    assert sum(overlaps(GAPS, spans)) == pytest.approx(1.5)
    assert covered(GAPS, spans) == pytest.approx(0.8)


def test_summarize_a_call_that_keeps_the_gil_and_one_that_lets_it_go():
    gaps = [(1.0, 1.001)]  # the loop stood still 1 ms, during the first call only
    calls = [(1.0, 1.001), (2.0, 2.001)]
    spawns = [(0.999, 1.002), (1.999, 2.002)]
    out = summarize(gaps, calls, spawns, cpu_s=0.0006, seconds=2.0)
    assert out["spawns_per_s"] == 1.0
    assert out["loop_stall_ms_per_s"] == pytest.approx(0.5)
    assert out["loop_max_gap_ms"] == pytest.approx(1.0)
    assert out["call_us"] == pytest.approx(1000.0)
    assert out["wall_us"] == pytest.approx(3000.0)
    assert out["held_frac"] == pytest.approx(0.5)
    assert out["loop_ran_frac"] == pytest.approx(0.5)  # the loop ran inside the second call
    assert out["stall_call_us"] == pytest.approx(500.0)
    assert out["stall_spawn_us"] == pytest.approx(500.0)
    assert out["cpu_us"] == pytest.approx(300.0)


def test_a_call_the_loop_ran_in_for_a_little_still_counts_as_letting_the_gil_go():
    calls = [(0.0, 1.0), (2.0, 3.0), (4.0, 5.0)]
    gaps = [(-0.1, 1.1), (2.0, 2.85), (4.0, 4.95)]  # whole; 85 %: ran; 95 %: held
    out = summarize(gaps, calls, calls, cpu_s=0.0, seconds=10.0)
    assert out["loop_ran_frac"] == pytest.approx(1 / 3, abs=0.001)


def test_summarize_without_spawns_reports_the_loop_alone():
    out = summarize([(0.0, 0.002)], [], [], cpu_s=0.0, seconds=1.0)
    assert out == {"spawns_per_s": 0.0, "loop_stall_ms_per_s": 2.0, "loop_max_gap_ms": 2.0}


def test_extra_stall_takes_the_baseline_out_per_spawn():
    base = {"way": "none", "spawns_per_s": 0.0, "loop_stall_ms_per_s": 80.0}
    row = {"way": "popen", "spawns_per_s": 600.0, "loop_stall_ms_per_s": 380.0}
    assert extra_stall_us(row, base) == pytest.approx(500.0)
    assert extra_stall_us(row, None) is None
    assert extra_stall_us(base, base) is None
