"""The leader's side of its own claims (D444): which runs of a plan its node's worker takes at
their creation, the operations that create them claimed, and how each creation's answer ends
their reservations. The scheduler calls these around its creation transactions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cluster.errors import LeaseGone
from cluster.etcd import OutcomeUnknown
from cluster.models import Run

if TYPE_CHECKING:
    from nodes.worker.ownclaims import OwnClaims, Reserved

Own = dict[str, "Reserved"]  # run id -> its reservation, per plan


def reserve(own: OwnClaims | None, runs: Iterable[tuple[Run, str]], held: Own) -> None:
    """Reserve, on this node's worker, the runs it would claim at once (added to ``held``)."""
    if own is None:
        return
    for run, _ in runs:
        if run.id not in held and (r := own.reserve(run)) is not None:
            held[run.id] = r


def create_ops(own: OwnClaims | None, run: Run, held: Own, compares: list[Any]) -> list[Any]:
    """The operations that create ``run`` claimed here when it is reserved (its claim's compares
    are added to ``compares``); empty when it is not (it is queued: ``create_run_ops``)."""
    r = held.get(run.id)
    if r is None or own is None:
        return []
    compares += r.compares
    return own.create_ops(r)


def unique(compares: list[Any]) -> list[Any]:
    """``compares`` without repeats of one object: the own claims of a transaction share their
    guards (``OwnClaims._compares``), which etcd needs to evaluate once."""
    seen: set[int] = set()
    return [c for c in compares if not (id(c) in seen or seen.add(id(c)))]  # type: ignore[func-returns-value]


def settle(
    own: OwnClaims | None,
    plans: Iterable[Own],
    revision: int | None,
    error: BaseException | None = None,
) -> None:
    """End the reservations of ``plans`` once their creation answered: committed at
    ``revision``; else refused or not applied (``revision`` None), or failed with ``error`` (an
    unknown outcome wakes the orphan check; a lease gone is the node's lease lost)."""
    if own is None:
        return
    for held in plans:
        for r in held.values():
            if revision is not None:
                own.won(r, revision)
            elif isinstance(error, (OutcomeUnknown, TimeoutError)) or (
                error is not None and not isinstance(error, Exception)
            ):
                own.unknown(r)  # a lost reply, or cancelled while the write was in flight
            else:
                own.release(r)
        if held and isinstance(error, LeaseGone):
            own.worker.session.lost.set()  # as a claim does: the node's lease is gone
        held.clear()
