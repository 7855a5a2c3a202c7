"""Which etcd member the client moves to when the current one stops answering."""

from __future__ import annotations

from cluster.etcd import next_member


def test_moves_to_the_next_member_when_none_failed_before():
    assert next_member(0, [5.0, 0.0, 0.0]) == 1
    assert next_member(2, [0.0, 0.0, 5.0]) == 0


def test_prefers_the_member_that_failed_longest_ago():
    # 1 failed a moment ago, 2 long ago: skip 1
    assert next_member(0, [9.0, 8.0, 1.0]) == 2
    # all failed: the oldest failure first
    assert next_member(1, [3.0, 9.0, 4.0]) == 0


def test_a_single_member_stays_itself():
    assert next_member(0, [7.0]) == 0


def test_cycles_through_every_member_under_repeated_failures():
    failed = [0.0, 0.0, 0.0, 0.0]
    seen, current = [], 0
    for t in range(1, 9):
        failed[current] = float(t)
        current = next_member(current, failed)
        seen.append(current)
    assert seen == [1, 2, 3, 0, 1, 2, 3, 0]
