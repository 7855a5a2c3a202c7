"""When the leader claims a run for its own node at its creation (D444): a table of plain values
(``cluster.ownclaim.own_claim``)."""

from __future__ import annotations

import pytest

from cluster.ownclaim import ARM_AHEAD, OWN_CLAIM_LEAD, Room, own_claim
from cluster.placement import Candidate, Placement, attempt_key, preferred

ME, OTHER = "me", "other"
ALONE = Placement((Candidate(ME, 1),))
SHARED = Placement((Candidate(ME, 1), Candidate(OTHER, 1)))
ROOM = Room(busy=0, armed=0, used_weight=0, capacity=4, max_armed=2)


def run_preferring(node: str, placement: Placement = SHARED) -> str:
    """A run id whose first attempt prefers ``node`` among ``placement``'s candidates."""
    for i in range(1000):
        rid = f"r{i}"
        best = preferred(attempt_key(rid, 1), placement.candidates)
        if best is not None and best.node == node:
            return rid
    raise AssertionError("no such run id")


@pytest.mark.parametrize(
    ("room", "ahead", "limited", "budgeted", "claims"),
    [
        (ROOM, True, False, False, True),  # ahead, armed room
        (ROOM, False, False, False, True),  # due now, capacity room
        (Room(0, 2, 0, 4, 2), True, False, False, False),  # max_armed reached
        (Room(0, 2, 0, 4, 2), False, False, False, True),  # armed full: a run due now still fits
        (Room(4, 0, 4, 4, 2), False, False, False, False),  # capacity full
        (Room(4, 0, 4, 4, 2), True, False, False, True),  # capacity full: arming is apart
        (Room(1, 0, 3, 4, 2, weight_budget=3), False, False, False, False),  # over the budget
        (Room(1, 0, 2, 4, 2, weight_budget=3), False, False, False, True),
        (ROOM, True, True, False, False),  # a job slot: through the queue
        (ROOM, True, False, True, False),  # a budget: through the queue
        (Room(0, 0, 0, 4, 0), True, False, False, False),  # arming off
    ],
)
def test_room_slots_and_budgets(room, ahead, limited, budgeted, claims):
    got = own_claim(ME, "r1", 1, ALONE, room, ahead=ahead, limited=limited, budgeted=budgeted)
    assert (got is not None) == claims
    if claims:
        assert got == Candidate(ME, 1)


def test_only_the_runs_it_is_preferred_for():
    mine, theirs = run_preferring(ME), run_preferring(OTHER)
    args = {"ahead": True, "limited": False, "budgeted": False}
    assert own_claim(ME, mine, 1, SHARED, ROOM, **args) == Candidate(ME, 1)
    assert own_claim(ME, theirs, 1, SHARED, ROOM, **args) is None  # never a hand-off
    assert own_claim(ME, mine, 1, Placement((Candidate(OTHER, 1),)), ROOM, **args) is None
    assert own_claim(ME, mine, 1, Placement((), "no eligible node"), ROOM, **args) is None


def test_the_draw_is_the_attempts_and_the_binding_is_the_cost():
    heavy = Placement((Candidate(ME, 3, binding="b", grant="g"), Candidate(OTHER, 1)))
    rid = run_preferring(ME, heavy)
    got = own_claim(ME, rid, 1, heavy, ROOM, ahead=False, limited=False, budgeted=False)
    assert got == Candidate(ME, 3, binding="b", grant="g")
    # the weight budget is counted with the binding's weight
    tight = Room(1, 0, 1, 4, 2, weight_budget=3)
    assert own_claim(ME, rid, 1, heavy, tight, ahead=False, limited=False, budgeted=False) is None
    # a retry draws afresh: the same run may prefer another node on its next attempt
    draws = {
        preferred(attempt_key(rid, a), heavy.candidates).node  # type: ignore[union-attr]
        for a in range(1, 40)
    }
    assert draws == {ME, OTHER}


@pytest.mark.parametrize(
    ("until", "lead", "claims"),
    [
        (0.0, OWN_CLAIM_LEAD, True),  # due now
        (OWN_CLAIM_LEAD, OWN_CLAIM_LEAD, True),  # at the default lead: claimed
        (OWN_CLAIM_LEAD + 0.01, OWN_CLAIM_LEAD, False),  # further: queued (D449)
        (29.0, OWN_CLAIM_LEAD, False),  # materialize_ahead 30: queued, not held 29 s
        (4.0, 5.0, True),  # a lead widened (tests): claimed
    ],
)
def test_only_runs_close_to_their_instant(until, lead, claims):
    got = own_claim(
        ME,
        "r1",
        1,
        ALONE,
        ROOM,
        ahead=until > 0,
        limited=False,
        budgeted=False,
        until=until,
        lead=lead,
    )
    assert (got is not None) == claims


def test_the_default_lead_is_the_default_materialize_ahead():
    from nodes.config import NodeConfig

    assert OWN_CLAIM_LEAD == NodeConfig.model_fields["materialize_ahead"].default


FULL_ARMED = Room(0, 2, 0, 4, 2)
FULL_HELD = Room(0, 0, 0, 4, 2, held=2)


@pytest.mark.parametrize(
    ("room", "until", "claims"),
    [
        (ROOM, 1.4, True),  # held: no process until ARM_AHEAD before its instant (D456)
        (FULL_ARMED, 1.4, True),  # the armed places taken: a held claim is apart from them
        (FULL_HELD, 1.4, False),  # max_armed claims held already: queued
        (Room(0, 0, 0, 4, 2, held=1), 1.4, True),
        (FULL_HELD, ARM_AHEAD, True),  # within the claim-ahead: armed at once, as before
        (FULL_ARMED, ARM_AHEAD, False),
        (FULL_ARMED, 0.3, False),
        (Room(0, 0, 0, 4, 0), 1.4, False),  # arming off: nothing held either
        (Room(4, 0, 4, 4, 2), 1.4, True),  # the capacity full now: held apart (D456, D458)
        (Room(4, 0, 4, 4, 2), 0.5, True),  # within the claim-ahead: armed apart, as before
        (Room(4, 0, 4, 4, 2, waiting=1), 1.4, False),  # runs wait for a seat: queued (D459)
        (Room(4, 0, 4, 4, 2, waiting=1), 0.5, True),  # armed apart from the seats, as before
    ],
)
def test_a_claim_further_than_the_claim_ahead_is_held_within_its_own_bound(room, until, claims):
    got = own_claim(
        ME, "r1", 1, ALONE, room, ahead=True, limited=False, budgeted=False, until=until
    )
    assert (got is not None) == claims


def test_the_arming_is_the_workers_claim_ahead():
    from nodes.worker.attempt import CLAIM_AHEAD

    assert ARM_AHEAD == CLAIM_AHEAD
