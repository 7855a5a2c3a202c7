"""The worker's side of the leader's own claims (D444): the leader of this node asks, for each
scheduled run it is about to create, whether the worker would claim it at once; if so the run's
place is reserved here synchronously (counted by ``busy``/``armed`` like a claim in flight, so
concurrent plans and dispatches cannot over-book), and the creation transaction writes the run
``running`` on this node with its claim bound to the node's lease and no queue entry.

The creation answers, and the reservation ends, one of three ways: committed (the run starts as
if its claim had answered: :meth:`OwnClaims.won`), refused or never applied (:meth:`release`:
the leader writes the run through the queue), or unknown (:meth:`unknown`: released, and the
orphan check adopts the claim if it did land, D444)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cluster.etcd import Compare, Op
from cluster.models import Run
from cluster.ownclaim import OWN_CLAIM_LEAD, Room, own_claim
from cluster.ownclaim import held as own_held
from cluster.placement import Candidate
from cluster.plan import slot_limit
from cluster.runas import decide
from cluster.runs import TICK_SOURCES
from cluster.store import dumps
from nodes import metrics

GUARDS_KEPT = 256  # compare lists kept (per view version, budgets, project with run_as, grant)

if TYPE_CHECKING:
    from nodes.worker.worker import Worker


@dataclass(slots=True)
class Reserved:
    """One run's place on this node, held from the plan until its creation answers."""

    run: Run  # as planned (pending): what the leader's book-keeping keeps
    started: Run  # running here: what the record says and the worker runs
    key: str  # the queue key it would have had: what the worker's claim counters hold
    cost: int
    ahead: bool
    held: bool  # ahead by more than the claim-ahead: no process until then (D456)
    compares: list[Any]  # the claim's: admin state, budgets, grants


class OwnClaims:
    """Reservations on one worker for its node's leader (every shard it leads shares them)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        # The claim compares, built once per view version and budget revision and shared by the
        # runs they apply to: a transaction holds each once (``unique``), not once per run.
        self._guards: dict[tuple[Any, ...], list[Any]] = {}
        self.lead = OWN_CLAIM_LEAD  # claimed only this close to the instant (D449; tests widen)

    def reserve(self, run: Run) -> Reserved | None:
        """Reserve ``run``'s place if this worker would claim it now as its preferred node."""
        w = self.worker
        if not w.accepting or w.session.lost.is_set() or w._interrupted.is_set():
            return None
        view = w.view
        if view is None or not view.ready or not w.budgets.ready:
            return None
        if run.status != "pending" or run.source not in TICK_SOURCES or run.execution:
            return None
        spec = run.snapshot
        user = spec.run_as.user if spec.run_as is not None else None
        if user is not None:
            if w.run_as is not None:
                group = spec.run_as.group if spec.run_as is not None else None
                if decide(user, group, w.run_as).refusal is not None:
                    return None
            if user not in view.project_users.get(run.project, ()):
                return None
        now = w.clock()
        ahead = run.not_before is not None and run.not_before > now
        placement = view.placement(spec.target.group, spec.target.selector, run.project, user)
        busy = w.busy()
        # the weight in use walks every execution: only when a weight budget can refuse the run
        weighed = not ahead and w.weight_budget is not None and busy < w.capacity
        room = Room(
            busy=busy,
            armed=w.armed(),
            used_weight=w.used_weight() if weighed else 0,
            capacity=w.capacity,
            max_armed=w.max_armed,
            weight_budget=w.weight_budget,
            held=w.held(),
            waiting=w.seating.seats.waiting,
        )
        until = (run.not_before - now).total_seconds() if ahead and run.not_before else 0.0
        chosen: Candidate | None = own_claim(
            w.node_id,
            run.id,
            run.attempt,
            placement,
            room,
            ahead=ahead,
            limited=slot_limit(spec.overlap, spec.max_parallel) > 0,
            budgeted=bool(w.budgets.joined(run)),
            until=until,
            lead=self.lead,
            arm=w.claim_ahead,
        )
        if chosen is None:
            return None
        due = run.not_before if ahead else None
        started = run.model_copy(  # as ``_claim`` writes it (D401: one step)
            update={
                "status": "running",
                "node": w.node_id,
                "started_at": due or now,
                "not_before": due,
            }
        )
        compares = self._compares(run, chosen)
        key = w.store.queue_key(run)
        w.claiming.add(key)
        held = ahead and own_held(until, w.claim_ahead)
        if held:  # counted apart from the armed runs until its arming (D456)
            w._claiming_held.add(key)
        elif ahead:
            w._claiming_ahead.add(key)
        w._claiming_runs.add(run.id)  # the orphan check leaves it alone meanwhile
        w._claim_cost[key] = chosen.weight
        return Reserved(run, started, key, chosen.weight, ahead, held, compares)

    def _compares(self, run: Run, chosen: Candidate) -> list[Any]:
        """What the claim compares: the node's admin state, the budget documents, the grants."""
        w, view = self.worker, self.worker.view
        assert view is not None
        user_project = run.project if run.snapshot.run_as is not None else None
        group_less = run.snapshot.target.group is None
        key = (view.version, w.budgets.docs_revision, user_project, chosen.grant, group_less)
        found = self._guards.get(key)
        if found is None:
            if len(self._guards) >= GUARDS_KEPT:
                self._guards.clear()
            found = self._guards[key] = [
                # drain/disable is exact: a creation made after the operator's write fails
                Compare.modified(w.keys.node_state(w.node_id), view.own_state()[1]),
                w.budgets.guard(),  # no budget newer than the cache (D365)
                *w._grant_guards(run, chosen),  # D142, D155
            ]
        return found

    def create_ops(self, r: Reserved) -> list[Any]:
        """What creates the run claimed (``create_run_ops`` with the claim's writes folded in):
        the record ``running`` here, the job index and active key as created, the history
        charge, the claim bound to the lease; no queue entry."""
        w, run = self.worker, r.run
        keys = w.keys
        doc = r.started.model_dump_json().encode()
        claim = {
            "node": w.node_id,
            "project": run.project,
            "job": run.job,
            "attempt": run.attempt,
            "weight": r.cost,
        }
        return [
            Op.put(keys.run(run.project, run.id), doc),
            Op.put(keys.job_run(run.project, run.job, run.id), run.status),
            w.store.charge_op(r.started, doc),
            Op.put(keys.active(run.project, run.job, run.id), run.status),
            Op.put(keys.claim(run.id), dumps(claim), w.session.lease_id),
        ]

    def won(self, r: Reserved, revision: int) -> None:
        """The creation committed at ``revision``: the run starts as if its claim answered."""
        w = self.worker
        try:
            metrics.child(metrics.CLAIMS, "won").inc()
            metrics.child(metrics.PLACED, "self").inc()
            w._start(r.started, revision, None, r.cost, held=r.held)
        finally:
            self._end(r)

    def release(self, r: Reserved) -> None:
        """The creation did not apply: the place goes back."""
        self._end(r)

    def unknown(self, r: Reserved) -> None:
        """The creation's outcome is unknown: the place goes back, and the orphan check looks
        for a claim of ours that no execution holds (it adopts the run if the write landed).
        Not counted here: the transaction is counted once, by the leader (D449)."""
        self._end(r)
        self.worker._orphan_check.set()

    def _end(self, r: Reserved) -> None:
        w = self.worker
        w.claiming.discard(r.key)
        w._claiming_ahead.discard(r.key)
        w._claiming_held.discard(r.key)
        w._claim_cost.pop(r.key, None)
        w._claiming_runs.discard(r.run.id)
        w.kick()
