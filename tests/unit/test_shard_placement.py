"""Sharded scheduling's pure decisions (D300-D304): hashing, ranking, placement, hand-over."""

from __future__ import annotations

import pytest

from bench import shardsim
from cluster.errors import InvalidInput
from cluster.shards import (
    MAX_SHARDS,
    SINGLETONS_SHARE,
    Shard,
    campaign_delay,
    check_count,
    current_candidates,
    election_name,
    hand_over_to,
    leaders,
    parse_setting,
    preference,
    rank_of,
    ranking,
    score,
    setting_value,
    shard0_weight,
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
    # the same functions as bench/shardsim.py, so the model's predictions apply
    for node in NODES:
        for s in range(16):
            assert score(node, s) == shardsim.score(node, s)
    assert SINGLETONS_SHARE == shardsim.SINGLETONS
    for n in (1, 2, 3, 4, 8):
        for k in (1, 2, 4, 8, 16, 64):
            assert leaders(NODES[:n], k) == shardsim.balanced(NODES[:n], k, SINGLETONS_SHARE)


@pytest.mark.parametrize(("n", "k"), [(1, 8), (2, 8), (3, 4), (3, 8), (3, 16), (4, 8), (8, 16)])
def test_placement_bounds_every_nodes_load(n, k):
    """Rendezvous with bounded loads (D395): no node carries more than ceil(total weight / N),
    shard 0 weighing itself plus the per-cluster loops; every shard has one leader."""
    nodes = NODES[:n]
    placed = leaders(nodes, k)
    assert sorted(placed) == list(range(k)) and set(placed.values()) <= set(nodes)
    w0 = shard0_weight(k)
    cap = max(w0, -(-(k - 1 + w0) // n))
    load = {
        node: sum(w0 if s == 0 else 1 for s, m in placed.items() if m == node) for node in nodes
    }
    assert max(load.values()) <= cap, load


def test_three_nodes_and_eight_shards_reach_the_goal_in_the_model():
    """GOALS.md: the busiest node <= 1.2 / min(K, N) of K = 1's leader work. Plain rendezvous
    put 4, 4 and 0 shards on the bench's 3 nodes (shard 0 with 3 others: 0.65 in the model)."""
    model = [f"node-{i}" for i in range(3)]
    placed = leaders(model, 8)
    per_node = sorted(list(placed.values()).count(n) for n in model)
    assert per_node == [1, 3, 4]
    assert list(placed.values()).count(placed[0]) == 1  # shard 0's node: the loops, no more
    # the loops measured 0.28 of a K = 1 leader's work (docs/benchmarks.md, 2026-12-07); the
    # placement reaches the goal while they cost 0.2-0.3 of it
    for share in (0.2, 0.25, SINGLETONS_SHARE):
        assert shardsim.busiest_share(placed, 8, share) <= 1.2 / 3 + 1e-9
    assert shardsim.shares(3, 8).rendezvous > 0.4


def test_rank_and_campaign_delay():
    order = preference(5, NODES, 8)
    assert sorted(order) == sorted(NODES)
    assert order[0] == leaders(NODES, 8)[5]  # the placed node first, then by rendezvous
    assert order[1:] == [n for n in ranking(5, NODES) if n != order[0]]
    for r, node in enumerate(order):
        assert rank_of(node, 5, NODES, 8) == r
    assert rank_of("newcomer", 5, [], 8) == 0  # alone: campaigns at once
    assert campaign_delay(0) == 0
    assert campaign_delay(1) < campaign_delay(2) <= campaign_delay(1000) <= 5.0


def test_hand_over_goes_to_the_best_queued_candidate_only():
    s, k = 3, 8
    live = NODES[:3]
    best, second, third = preference(s, live, k)
    assert hand_over_to(best, s, [best, second, third], live, k) is None
    assert hand_over_to(second, s, [second, third], live, k) is None  # best not queued: keep it
    assert hand_over_to(second, s, [second, third, best], live, k) == best
    assert hand_over_to(third, s, [third, second], live, k) == second
    # the chain ends: each hand-over moves the shard up the ranking, the best never hands over
    leader, queued, hops = third, [third, second, best], 0
    while (to := hand_over_to(leader, s, queued, live, k)) is not None:
        leader, hops = to, hops + 1
    assert leader == best and hops <= 2


@pytest.mark.parametrize("k", [4, 8, 16])
def test_every_live_set_settles_every_shard_on_its_placed_node(k):
    """Whoever leads and whoever is queued, hand-overs end on ``leaders(live)`` and never loop:
    what a join or a departure moves, the hand-over carries out."""
    for n in (2, 3, 4):
        live = NODES[:n]
        placed = leaders(live, k)
        for s in range(k):
            for start in live:
                leader, hops = start, 0
                while (to := hand_over_to(leader, s, live, live, k)) is not None:
                    leader, hops = to, hops + 1
                    assert hops <= 1  # everyone queued: one hop to the placed node
                assert leader == placed[s]


def test_shards_move_little_when_a_node_joins_or_leaves():
    """Bounded loads move more than plain rendezvous (which moved only the newcomer's and the
    dead node's shards): the model's mean is 0.5 of 8 shards on 3 nodes when one dies, against
    0.33 (bench.shardsim); a move is a graceful hand-over (tests/integration)."""
    k = 16
    before = leaders(NODES[:3], k)
    after_join = leaders(NODES[:4], k)
    moved = [s for s in range(k) if before[s] != after_join[s]]
    assert len(moved) <= k // 2
    after_leave = leaders(NODES[1:3], k)
    moved = [s for s in range(k) if before[s] != after_leave[s]]
    assert len(moved) <= k // 2 + sum(1 for n in before.values() if n == NODES[0])
    model = shardsim.shares(3, 8)
    assert model.moved_balanced <= 0.5


def test_shard_bounds():
    with pytest.raises(ValueError):
        Shard(4, 4)
    with pytest.raises(InvalidInput):
        Shard(0, 0)
    assert Shard(0, 4).singletons and not Shard(1, 4).singletons


def test_only_candidacies_under_their_nodes_current_lease_count():
    lease_of = {"a": 7, "b": 9}
    queued = [("a", 7), ("b", 8), ("b", 9), ("c", 5)]  # b: an old candidacy, then its current
    assert current_candidates(queued, lease_of) == ["a", "b"]
    assert current_candidates([("b", 8)], lease_of) == []  # a restart's leftover only
    assert current_candidates(queued, {}) == []  # no live node: nobody to hand to
