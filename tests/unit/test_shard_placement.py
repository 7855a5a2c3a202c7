"""Sharded scheduling's pure decisions (D300-D304): hashing, ranking, placement, hand-over."""

from __future__ import annotations

import pytest

from bench import shardsim
from cluster.errors import InvalidInput
from cluster.shards import (
    MAX_SHARDS,
    Shard,
    campaign_delay,
    check_count,
    election_name,
    hand_over_to,
    leaders,
    parse_setting,
    rank_of,
    ranking,
    score,
    setting_value,
    shard_of,
)

NODES = [f"node-{i}" for i in range(1, 9)]
JOBS = [("default", f"job-{i}") for i in range(2000)] + [("other", f"job-{i}") for i in range(500)]


def test_one_shard_owns_every_job_and_keeps_todays_election():
    assert {shard_of(p, n, 1) for p, n in JOBS} == {0}
    assert all(Shard().owns(p, n) for p, n in JOBS)
    assert election_name(0) == "scheduler"  # K = 1 campaigns exactly as before
    assert election_name(3) == "scheduler-3"


@pytest.mark.parametrize("k", [2, 4, 8, 16, 64])
def test_every_job_has_exactly_one_shard_and_shards_are_even(k):
    owners = [[s for s in range(k) if Shard(s, k).owns(p, n)] for p, n in JOBS]
    assert all(len(o) == 1 for o in owners)
    counts = [sum(1 for o in owners if o[0] == s) for s in range(k)]
    mean = len(JOBS) / k
    assert max(counts) < 1.5 * mean + 10 and min(counts) > 0.5 * mean - 10, counts


def test_the_shard_depends_on_project_and_name_and_is_stable():
    assert shard_of("a", "b", 8) == shard_of("a", "b", 8)
    # project/name, not the name alone: two projects' "backup" jobs spread
    spread = {shard_of(f"p{i}", "backup", 8) for i in range(64)}
    assert len(spread) > 4


@pytest.mark.parametrize(
    ("value", "ok"),
    [(1, True), (8, True), (MAX_SHARDS, True), (0, False), (-1, False), (MAX_SHARDS + 1, False),
     ("4", False), (True, False), (2.0, False), (None, False)],
)  # fmt: skip
def test_shard_count_is_checked_with_the_field_named(value, ok):
    if ok:
        assert check_count(value) == value
    else:
        with pytest.raises(InvalidInput) as err:
            check_count(value)
        assert err.value.field == "shards"


@pytest.mark.parametrize(
    ("raw", "k"),
    [(None, 1), (b"", 1), (b'{"shards": 4}', 4), (b'{"shards": 0}', 1), (b"not json", 1),
     (b"[1]", 1), (b'{"shards": "8"}', 1), (setting_value(16).encode(), 16)],
)  # fmt: skip
def test_setting_that_cannot_be_read_means_one_scheduler(raw, k):
    assert parse_setting(raw) == k


def test_ranking_is_the_models_rendezvous_score():
    # the same function as bench/shardsim.py, so the model's predictions apply
    for node in NODES:
        for s in range(16):
            assert score(node, s) == shardsim.score(node, s)
    assert leaders(NODES[:4], 16) == shardsim.leaders(NODES[:4], 16)


def test_rank_and_campaign_delay():
    order = ranking(5, NODES)
    assert sorted(order) == sorted(NODES)
    for r, node in enumerate(order):
        assert rank_of(node, 5, NODES) == r
    assert rank_of("newcomer", 5, []) == 0  # alone: campaigns at once
    assert campaign_delay(0) == 0
    assert campaign_delay(1) < campaign_delay(2) <= campaign_delay(1000) <= 5.0


def test_hand_over_goes_to_the_best_queued_candidate_only():
    s = 3
    best, second, third = ranking(s, NODES[:3])
    assert hand_over_to(best, s, [best, second, third]) is None
    assert hand_over_to(second, s, [second, third]) is None  # best not queued: keep it
    assert hand_over_to(second, s, [second, third, best]) == best
    assert hand_over_to(third, s, [third, second]) == second
    # the chain ends: each hand-over moves the shard up the ranking, the best never hands over
    leader, queued, hops = third, [third, second, best], 0
    while (to := hand_over_to(leader, s, queued)) is not None:
        leader, hops = to, hops + 1
    assert leader == best and hops <= 2


def test_shards_spread_and_move_little_when_a_node_joins_or_leaves():
    k = 16
    model_nodes = [f"node-{i}" for i in range(3)]  # the model's names: the same placement
    per_node = [list(leaders(model_nodes, k).values()).count(n) for n in model_nodes]
    assert max(per_node) == shardsim.placement(3, k).max_shards_per_node
    assert min(per_node) >= 1
    before = leaders(NODES[:3], k)
    after_join = leaders(NODES[:4], k)
    moved = [s for s in range(k) if before[s] != after_join[s]]
    assert all(after_join[s] == NODES[3] for s in moved)  # only to the newcomer
    after_leave = leaders(NODES[1:3], k)
    moved = [s for s in range(k) if before[s] != after_leave[s]]
    assert all(before[s] == NODES[0] for s in moved)  # only the dead node's shards


def test_shard_bounds():
    with pytest.raises(ValueError):
        Shard(4, 4)
    with pytest.raises(InvalidInput):
        Shard(0, 0)
    assert Shard(0, 4).singletons and not Shard(1, 4).singletons
