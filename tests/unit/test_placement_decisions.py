"""Placement decisions with plain values: eligibility and reasons, weighted choice, room, hand-off."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from cluster.placement import (
    Binding,
    Candidate,
    NodeView,
    Placement,
    Topology,
    admin_status,
    attempt_key,
    decide_claim,
    fits,
    for_target,
    place,
    preferred,
)

A = NodeView("a", {"zone": "eu1", "gpu": "true"})
B = NodeView("b", {"zone": "eu2"})
C = NodeView("c", {"zone": "us1"}, weight_budget=2)
DOWN = NodeView("d", {"zone": "eu1"}, up=False)
OFF = NodeView("e", {"zone": "eu1"}, admin="disabled")
DRAIN = NodeView("f", {"zone": "eu1"}, admin="draining")
STOPPING = NodeView("g", {"zone": "eu1"}, admin="stopping")


def topo(*nodes: NodeView, groups: dict[str, list[tuple[str, str, int]]] | None = None) -> Topology:
    groups = groups or {}
    return Topology(
        {n.id: n for n in nodes},
        frozenset(groups),
        {g: tuple(Binding(g, name, node, w) for name, node, w in bs) for g, bs in groups.items()},
    )


def nodes_of(p: Placement) -> list[tuple[str, int]]:
    return [(c.node, c.weight) for c in p.candidates]


@pytest.mark.parametrize(
    ("group", "selector", "cluster", "expected", "reason"),
    [
        (None, "", topo(A, B), [("a", 1), ("b", 1)], None),
        (None, "zone in (eu1, eu2)", topo(A, B, C), [("a", 1), ("b", 1)], None),
        (None, "gpu=true", topo(A, B), [("a", 1)], None),
        (None, "!gpu", topo(A, B), [("b", 1)], None),
        (None, "gpu=true", topo(B, C), [], "no eligible node: no live node matches 'gpu=true'"),
        (None, "", topo(), [], "no eligible node: no node is up"),
        (None, "", topo(DOWN), [], "no eligible node: no node is up"),
        (
            None,
            "zone=eu1",
            topo(DOWN, OFF, DRAIN, STOPPING),
            [],
            "no eligible node: e is disabled; f is draining; g is stopping",
        ),
        ("g", "", topo(A), [], "no eligible node: group 'g' does not exist"),
        ("g", "", topo(A, groups={"g": []}), [], "no eligible node: group 'g' has no bindings"),
        (
            "g",
            "",
            topo(A, B, groups={"g": [("one", "a", 1), ("two", "b", 3)]}),
            [("a", 1), ("b", 3)],
            None,
        ),
        (
            "g",
            "zone=eu2",
            topo(A, B, groups={"g": [("one", "a", 1), ("two", "b", 3)]}),
            [("b", 3)],
            None,
        ),
        (
            "g",
            "",
            topo(A, OFF, groups={"g": [("x", "gone", 1), ("y", "e", 1)]}),
            [],
            "no eligible node in group 'g': binding 'x': gone is down; binding 'y': e is disabled",
        ),
        (
            "g",
            "",
            topo(C, groups={"g": [("heavy", "c", 5)]}),
            [],
            "no eligible node in group 'g': binding 'heavy': c: binding 'heavy' weighs 5, "
            "more than the node's weight budget 2",
        ),
        # A node bound twice in a group carries both bindings' share.
        (
            "g",
            "",
            topo(A, B, groups={"g": [("p", "a", 2), ("q", "a", 1), ("r", "b", 1)]}),
            [("a", 2), ("a", 1), ("b", 1)],
            None,
        ),
    ],
)
def test_place(group, selector, cluster, expected, reason):
    p = place(group, selector, cluster)
    assert nodes_of(p) == expected
    assert p.reason == reason


def test_reason_is_bounded_for_many_nodes():
    many = [NodeView(f"n{i:03d}", admin="disabled") for i in range(50)]
    p = place(None, "", topo(*many))
    assert p.reason is not None and p.reason.endswith("and 42 more")


def test_preferred_is_deterministic_and_one_of_the_candidates():
    cands = [Candidate("a", 1), Candidate("b", 2), Candidate("c", 3)]
    for i in range(200):
        run = f"{i:019d}"
        first = preferred(run, cands)
        assert first in cands
        assert preferred(run, list(reversed(cands))) == first
    assert preferred("1", []) is None


def chi_square(counts: Counter[str], weights: dict[str, int]) -> float:
    n = sum(counts.values())
    total = sum(weights.values())
    return sum((counts[k] - n * w / total) ** 2 / (n * w / total) for k, w in weights.items())


def test_weighted_choice_follows_the_weights():
    weights = {"a": 1, "b": 2, "c": 3, "d": 10}
    cands = [Candidate(k, w) for k, w in weights.items()]
    counts = Counter(preferred(f"{i:019d}", cands).node for i in range(40_000))  # type: ignore[union-attr]
    # chi-square, 3 degrees of freedom: P(X > 32.9) ~ 3e-7 for a fair weighted choice.
    assert chi_square(counts, weights) < 32.9, counts


def test_removing_a_candidate_moves_only_its_runs():
    cands = [Candidate("a", 1), Candidate("b", 1), Candidate("c", 1)]
    without_c = cands[:2]
    moved = 0
    for i in range(3000):
        run = f"{i:019d}"
        before = preferred(run, cands)
        after = preferred(run, without_c)
        assert before is not None and after is not None
        if before.node != "c":
            assert after == before
        else:
            moved += 1
    assert math.isclose(moved / 3000, 1 / 3, abs_tol=0.05)


@pytest.mark.parametrize(
    ("running", "used", "cost", "capacity", "budget", "ok"),
    [
        (0, 0, 1, 1, None, True),
        (1, 1, 1, 1, None, False),
        (3, 3, 1, 4, None, True),
        (0, 0, 5, 4, 4, False),
        (1, 2, 2, 16, 4, True),
        (2, 3, 2, 16, 4, False),
        (15, 0, 1, 16, 100, True),
        (16, 0, 1, 16, 100, False),
    ],
)
def test_fits(running, used, cost, capacity, budget, ok):
    assert (
        fits(running=running, used_weight=used, cost=cost, capacity=capacity, weight_budget=budget)
        is ok
    )


def test_decide_claim_preferred_now_others_after_the_hand_off_delay():
    p = Placement((Candidate("a", 1, "x"), Candidate("b", 1, "y")))
    run = next(f"{i:019d}" for i in range(100) if preferred(f"{i:019d}", p.candidates).node == "a")  # type: ignore[union-attr]
    now = decide_claim("a", run, p, waited=0, handoff_delay=1)
    assert now.claim and now.preferred and now.candidate == Candidate("a", 1, "x")
    early = decide_claim("b", run, p, waited=0.25, handoff_delay=1)
    assert not early.claim and early.wait == pytest.approx(0.75)
    late = decide_claim("b", run, p, waited=1.0, handoff_delay=1)
    assert late.claim and not late.preferred and late.candidate == Candidate("b", 1, "y")
    outsider = decide_claim("z", run, p, waited=99, handoff_delay=1)
    assert not outsider.claim and outsider.wait is None


@pytest.mark.parametrize(
    ("admin", "running", "shown"),
    [
        ("enabled", 3, "enabled"),
        ("disabled", 0, "disabled"),
        ("draining", 2, "draining"),
        ("draining", 0, "drained"),
    ],
)
def test_admin_status(admin, running, shown):
    assert admin_status(admin, running) == shown


def test_for_target_maps_a_job_target():
    from cluster.models import Target

    cluster = topo(A, B, groups={"g": [("one", "a", 4)]})
    assert nodes_of(for_target(Target(group="g"), cluster)) == [("a", 4)]
    assert nodes_of(for_target(Target(selector="zone=eu2"), cluster)) == [("b", 1)]


def test_each_attempt_draws_its_preferred_node_afresh():
    cands = [Candidate("a", 1), Candidate("b", 1), Candidate("c", 1)]
    same = sum(
        preferred(attempt_key(f"{i:019d}", 1), cands)
        == preferred(attempt_key(f"{i:019d}", 2), cands)
        for i in range(3000)
    )
    assert math.isclose(same / 3000, 1 / 3, abs_tol=0.05)
