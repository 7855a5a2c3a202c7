"""Balanced shard placement (D418): rendezvous with a cap on each node's load."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench import shardsim
from cluster.shards import (
    SINGLETON_WEIGHT,
    hand_over_to,
    leaders,
    placement,
    rank_of,
    ranking,
    score,
)


def _nodes(rng: random.Random, n: int) -> list[str]:
    return [f"n{rng.getrandbits(40):x}" for _ in range(n)]


def _weights(placed: dict[int, str], k: int) -> Counter[str]:
    load: Counter[str] = Counter()
    for s, node in placed.items():
        load[node] += SINGLETON_WEIGHT if s == 0 and k > 1 else 1
    return load


def test_eight_shards_over_the_benchmarks_three_nodes_lead_two_three_three():
    # the highest score alone gave these names 4 / 4 / 0: one node idle, the busiest at 4/8
    nodes = [f"node-{i}" for i in range(3)]
    by_score = Counter(shardsim.leaders(nodes, 8, balanced=False).values())
    assert sorted(by_score.values()) == [4, 4]
    placed = leaders(nodes, 8)
    assert sorted(Counter(placed.values()).values()) == [2, 3, 3]
    assert Counter(placed.values())[placed[0]] == 2  # shard 0's node: the per-cluster loops too
    assert placed == shardsim.leaders(nodes, 8)  # the model places as the product does


@pytest.mark.parametrize("seed", range(40))
def test_no_node_leads_more_than_its_share(seed):
    rng = random.Random(seed)
    n, k = rng.randint(1, 9), rng.choice([2, 3, 4, 8, 16, 64])
    nodes = _nodes(rng, n)
    placed = placement(nodes, k)
    assert sorted(placed) == list(range(k)) and set(placed.values()) <= set(nodes)
    total = k + SINGLETON_WEIGHT - 1
    cap = -(-total // n)
    load = _weights(placed, k)
    if cap >= SINGLETON_WEIGHT:  # shard 0 fits under the cap: every node within it
        assert max(load.values()) <= cap
    assert max(Counter(placed.values()).values()) <= -(-k // n) + 1
    # the same answer whatever order the live nodes are listed in, on every node
    shuffled = nodes[:]
    rng.shuffle(shuffled)
    assert placement(shuffled, k) == placed
    assert leaders(shuffled, k) == placed


@pytest.mark.parametrize("seed", range(20))
def test_ranking_starts_with_the_placed_node_then_goes_by_score(seed):
    rng = random.Random(seed)
    nodes, k = _nodes(rng, rng.randint(2, 6)), rng.choice([4, 8, 16])
    placed = placement(nodes, k)
    for s in range(k):
        order = ranking(s, nodes, k)
        assert order[0] == placed[s]
        rest = order[1:]
        assert rest == sorted(rest, key=lambda n, s=s: (-score(n, s), n))
        for r, node in enumerate(order):
            assert rank_of(node, s, nodes, k) == r


@pytest.mark.parametrize("seed", range(20))
def test_a_hand_over_goes_to_the_placed_node_and_the_chain_ends(seed):
    rng = random.Random(seed)
    nodes, k = _nodes(rng, rng.randint(2, 6)), 8
    placed = placement(nodes, k)
    for s in range(k):
        order = ranking(s, nodes, k)
        # whoever leads hands over to the best QUEUED node of the ranking over the LIVE ones
        for leader in order:
            queued = [n for n in order if n != leader]
            assert hand_over_to(leader, s, queued, live=nodes, shards=k) == (
                None if leader == placed[s] else placed[s]
            )
        # the placed node not queued: the leader keeps the shard unless a better one is queued
        lead, others = order[-1], order[1:-1]
        to = hand_over_to(lead, s, others, live=nodes, shards=k)
        assert to == (others[0] if others else None)
        # any start: each hop goes up the ranking, and it ends at the placed node
        leader, hops = order[-1], 0
        while (to := hand_over_to(leader, s, nodes, live=nodes, shards=k)) is not None:
            assert order.index(to) < order.index(leader)
            leader, hops = to, hops + 1
        assert leader == placed[s] and hops <= 1


def test_placement_depends_on_the_live_set_not_only_the_queue():
    # a live node that is not (yet) queued still counts in the caps: every node computes the
    # placement from the same live set, and a hand-over waits until the placed node queues
    nodes = [f"node-{i}" for i in range(3)]
    placed = placement(nodes, 8)
    s = next(s for s in range(8) if placed[s] != nodes[0])
    assert hand_over_to(nodes[0], s, [], live=nodes, shards=8) is None
    assert hand_over_to(nodes[0], s, [placed[s]], live=nodes, shards=8) == placed[s]
