"""Balanced shard placement (D395): rendezvous with a cap on each node's load."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench import shardsim
from cluster.shards import (
    SINGLETONS_SHARE,
    hand_over_to,
    leaders,
    placement,
    rank_of,
    ranking,
    score,
    shard_weight,
)


def _nodes(rng: random.Random, n: int) -> list[str]:
    return [f"n{rng.getrandbits(40):x}" for _ in range(n)]


def _weights(placed: dict[int, str], k: int) -> Counter[str]:
    load: Counter[str] = Counter()
    for s, node in placed.items():
        load[node] += shard_weight(s, k)
    return load


def test_eight_shards_over_the_benchmarks_three_nodes_lead_one_three_four():
    # the highest score alone gave these names 4 / 4 / 0: one node idle, the busiest at 4/8
    nodes = [f"node-{i}" for i in range(3)]
    by_score = Counter(shardsim.leaders(nodes, 8, balanced=False).values())
    assert sorted(by_score.values()) == [4, 4]
    placed = leaders(nodes, 8)
    assert sorted(Counter(placed.values()).values()) == [1, 3, 4]
    # shard 0's node leads shard 0 alone: the per-cluster loops weigh 4 shards at K = 8 (D395;
    # weighing 2 (as first tried) placed 2 / 3 / 3 and shard 0's node was the busiest: 0.475 in the model)
    assert Counter(placed.values())[placed[0]] == 1
    assert placed == shardsim.leaders(nodes, 8)  # the model places as the product does
    # GOALS.md: the busiest node <= 1.2 / min(K, N) of K = 1; the loops measured 0.28-0.35 of a
    # K = 1 leader (docs/benchmarks.md, 2026-12-07): within the goal from 0.2 to 0.32
    assert SINGLETONS_SHARE == shardsim.SINGLETONS
    for share in (0.2, 0.25, SINGLETONS_SHARE):
        assert shardsim.busiest_share(placed, 8, share) <= 1.2 / 3 + 1e-9
    assert shardsim.shares(3, 8).rendezvous > 0.4


@pytest.mark.parametrize(("n", "k"), [(3, 8), (3, 16), (4, 16), (5, 16), (2, 64), (9, 8)])
def test_shard_0_is_placed_first_and_never_left_over(n, k):
    """Shard 0 is the heaviest: placed before the others on its best-scored node, so it never
    falls to the fallback that overloads a node (it did at K = 16 over 3 nodes, weighing 8)."""
    nodes = [f"node-{i}" for i in range(n)]
    placed = leaders(nodes, k)
    assert placed[0] == ranking(0, nodes)[0]
    load = _weights(placed, k)
    cap = max(shard_weight(0, k), -(-sum(shard_weight(s, k) for s in range(k)) // n))
    assert max(load.values()) <= cap, load


@pytest.mark.parametrize("seed", range(40))
def test_no_node_leads_more_than_its_share(seed):
    rng = random.Random(seed)
    n, k = rng.randint(1, 12), rng.choice([2, 3, 4, 8, 16, 32, 64])
    nodes = _nodes(rng, n)
    placed = placement(nodes, k)
    assert sorted(placed) == list(range(k)) and set(placed.values()) <= set(nodes)
    heavy = shard_weight(0, k)
    fair = -(-(k + heavy - 1) // n)
    load = _weights(placed, k)
    if heavy < fair or n == 1:
        assert max(load.values()) <= fair
    else:  # shard 0 alone is a node's share: it leads nothing else, the rest split evenly
        others = Counter(node for s, node in placed.items() if s != 0)
        assert placed[0] not in others
        assert max(others.values(), default=0) <= -(-(k - 1) // (n - 1))
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
