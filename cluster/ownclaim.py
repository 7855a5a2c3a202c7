"""Whether the leader claims a run it creates for its own node's worker (D444), pure.

The leader and the worker of one node share a process and a lease. For a scheduled tick's run
that this node's worker would claim at once, the creation transaction can write the run already
``running`` here, bound to that lease, instead of a queue entry the worker would claim a watch
event later. It does so only where the worker's own claim would have been made the same way:

- the run's *preferred* node is this one (the same rendezvous draw as ``decide_claim`` with no
  wait: never a hand-off, so the spread over nodes follows the weights as before);
- the node has room now, counted as the claim path counts it: a run due now needs a place within
  ``capacity`` and the weight budget (``fits``); a run within ``arm`` (the worker's claim-ahead,
  0.75 s) of its instant an armed place (``armed < max_armed``); a run further ahead is *held*
  (claimed, no process yet) until ``arm`` before its instant, then armed as soon as a place is
  free (else it takes a seat at its instant, D457): it needs a held place (``held <
  max_armed``, D456), so a node holds at most ``max_armed`` armed processes and ``max_armed``
  held claims;
- nothing the claim would have to settle against other nodes: no job slot (``overlap`` /
  ``max_parallel``) and no budget applies; those runs go through the queue as before;
- the run's instant is at most ``OWN_CLAIM_LEAD`` away (D449): a node configured to write its
  runs further ahead (``materialize_ahead`` up to 30 s) queues those, so a leader's node never
  holds a run armed (its process spawned, its environment fixed) for long before its instant.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.placement import Candidate, Placement, attempt_key, fits, preferred

OWN_CLAIM_LEAD = 1.5  # seconds: claimed in its creation only this close to its instant (D449)
ARM_AHEAD = 0.75  # seconds: an own claim's process is armed this close to its instant (D456)


@dataclass(frozen=True, slots=True)
class Room:
    """What the node holds, as its worker counts it (``busy``, ``armed``, ``used_weight``,
    ``held``)."""

    busy: int
    armed: int
    used_weight: int
    capacity: int
    max_armed: int
    weight_budget: int | None = None
    held: int = 0  # own claims held before their arming (D456): ``max_armed`` bounds them apart
    waiting: int = 0  # runs waiting for a seat now: none, or nothing more is held (D459)


def own_claim(
    me: str,
    run_id: str,
    attempt: int,
    placement: Placement,
    room: Room,
    *,
    ahead: bool,
    limited: bool,
    budgeted: bool,
    until: float = 0.0,
    lead: float = OWN_CLAIM_LEAD,
    arm: float = ARM_AHEAD,
) -> Candidate | None:
    """The candidate (this node, through which binding: its cost) to claim ``run_id`` through
    at its creation, or None: it is queued as before. ``until``: seconds to the run's instant
    (0 when due); beyond ``lead`` it is queued; beyond ``arm`` it is held (:func:`held`)."""
    if limited or budgeted or until > lead:
        return None
    best = preferred(attempt_key(run_id, attempt), placement.candidates)
    if best is None or best.node != me:
        return None
    if ahead:
        if held(until, arm):  # a held place, apart from the armed ones and the capacity (D456)
            if room.waiting:  # the seats are short now: queued, as main leaves them (D459)
                return None
            return best if room.held < room.max_armed else None
        return best if room.armed < room.max_armed else None
    if not fits(
        running=room.busy,
        used_weight=room.used_weight,
        cost=best.weight,
        capacity=room.capacity,
        weight_budget=room.weight_budget,
    ):
        return None
    return best


def held(until: float, arm: float = ARM_AHEAD) -> bool:
    """Whether an own claim ``until`` s ahead of its instant is held (claimed, no process yet)
    rather than armed at once: while it is more than ``arm`` s away (D456)."""
    return until > arm
