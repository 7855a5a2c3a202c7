"""The worker's claims: the slot probe, the claim transaction (lease-bound, compared against the
queue entry, the cancel request and the slot), and the adoption of claims whose reply was lost."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog

from cluster.errors import Unavailable
from cluster.etcd import (
    KV,
    Compare,
    LeaseGone,
    Op,
    OutcomeUnknown,
)
from cluster.models import Run
from cluster.placement import Candidate
from cluster.plan import slot_limit
from cluster.store import Stored, dumps
from cluster.waiting import woken
from nodes import metrics
from nodes.worker.attempt import ORPHAN_CHECK_EVERY
from nodes.worker.budgets import Plan

log = structlog.get_logger(__name__)


class Claiming:
    """The claiming part of :class:`~nodes.worker.worker.Worker` (its state is the worker's)."""

    orphan_every: float = ORPHAN_CHECK_EVERY  # the periodic orphan check (tests lengthen it)

    # -- claiming ------------------------------------------------------------------------------

    async def _free_slot(self, run: Run) -> tuple[bool, str | None]:
        limit = slot_limit(run.snapshot.overlap, run.snapshot.max_parallel)
        if not limit:
            return True, None
        res = await self.etcd.range(self.keys.slots(run.project, run.job), keys_only=True)
        used = {int(kv.key.rsplit("/", 1)[-1]) for kv in res.kvs}
        for i in range(limit):
            if i not in used:
                return True, self.keys.slot(run.project, run.job, i)
        return False, None

    def _grant_guards(self, run: Run, chosen: Candidate) -> list[Any]:
        """Compares that make a claim exact against grants (D155): the group record that let the
        project reach this node is unchanged since the view read it (a revoked grant fails the
        claim even before the watch delivers it); a node the project reaches as a shared node
        was not bound to a group since (which would have reserved it)."""
        if self.view is None:
            return []
        guards: list[Any] = []
        if run.snapshot.run_as is not None:
            # the project's run_as grant is what the view read: a user revoked just now fails
            # the claim even before the watch delivers the change (D142)
            rev = self.view.project_revision(run.project)
            guards.append(Compare.modified(self.keys.project(run.project), rev))
        if chosen.grant is not None:
            rev = self.view.group_revision(chosen.grant)
            return [*guards, Compare.modified(self.keys.group(chosen.grant), rev)]
        if run.snapshot.target.group is None:
            since = self.view.bindings_revision
            return [*guards, Compare.unchanged_since(self.keys.bindings(), since)]
        return guards

    async def _claim(
        self,
        key: str,
        kv: KV,
        run: Run,
        cost: int = 1,
        via: str = "preferred",
        guards: list[Any] | None = None,
        budget: Plan | None = None,
        docs_seen: int | None = None,
        state_seen: int | None = None,
    ) -> None:
        won: int | None = None  # the claim's revision, once it succeeded
        try:
            ok, slot = await self._free_slot(run)
            if not ok:
                metrics.CLAIMS.labels("no_slot").inc()
                self._kick_at(0.2)
                return
            now = self.clock()
            # claimed ahead of its instant: it starts then (``_run_process`` waits)
            due = run.not_before if run.not_before is not None and run.not_before > now else None
            start = due or now
            if due is None and budget is not None and budget.windows and budget.at is not None:
                # the instant whose start window the budget counted, not this later one: across
                # the window's end it would fall in the next window, over its limit (D468)
                start = budget.at
            started = run.model_copy(  # one step, no per-field ``__setattr__`` (D401)
                update={
                    "status": "running",
                    "node": self.node_id,
                    "started_at": start,
                    "not_before": due,
                }
            )
            lease = self.session.lease_id
            control = self.keys.control(run.id)
            compares = [Compare.modified(key, kv.mod_revision), Compare.absent(control)]
            compares += guards or []
            # no budget newer than the documents the decision read (D365, D469)
            compares.append(self.budgets.guard(docs_seen))
            if self.view is not None:
                # Drain/disable is exact: a claim made after the operator's write fails — the
                # state as the decision saw it, not as the view stands now (D470)
                if state_seen is None:
                    state_seen = self.view.own_state()[1]
                compares.append(Compare.modified(self.keys.node_state(self.node_id), state_seen))
            ops = [
                Op.delete(key),
                Op.put(
                    self.keys.claim(run.id),
                    dumps(
                        {
                            "node": self.node_id,
                            "project": run.project,
                            "job": run.job,
                            "attempt": run.attempt,
                            "weight": cost,
                        }
                    ),
                    lease,
                ),
                Op.put(self.keys.run(run.project, run.id), started.model_dump_json()),
            ]
            if slot is not None:
                compares.append(Compare.absent(slot))
                ops.append(Op.put(slot, run.id, lease))
            if budget is not None:  # a slot of each budget, and its start window (D275)
                compares += budget.compares
                ops += self.budgets.ops(budget, run.id, lease)
            probes = [Op.get(control), Op.get(key), self.budgets.probe()]
            res = await self.batch.txn(compares, ops, probes)
            if not res.succeeded:
                if await self.budgets.catch_up(res.range_kvs(2)):
                    metrics.CLAIMS.labels("lost_race").inc()
                    return  # looked at again with the budgets as they are (``finally`` kicks)
                if res.range_kvs(0) and res.range_kvs(1):
                    # Cancelled while queued: finish it as cancelled instead of running it.
                    await self.store.cancel_pending(
                        Stored(run, kv.mod_revision), "cancelled before it started"
                    )
                metrics.CLAIMS.labels("lost_race").inc()
                if slot is not None:
                    self._kick_at(0.05)
                return
            metrics.child(metrics.CLAIMS, "won").inc()
            metrics.child(metrics.PLACED, via).inc()
            self.candidates.pop(key, None)
            won = res.revision
            self._start(started, res.revision, slot, cost)
            self._hold(run.id, budget.slots if budget else [])
        except LeaseGone:
            log.warning("claim rejected: lease gone", run=run.id)
            self.session.lost.set()
        except (Unavailable, OutcomeUnknown) as exc:
            # An unknown claim outcome is resolved by reading back: _adopt_orphans finds a claim
            # of ours that no execution holds and runs it.
            if isinstance(exc, OutcomeUnknown):
                metrics.OUTCOME_UNKNOWN.labels("claim").inc()
            log.warning("claim outcome unknown; will read back", run=run.id, error=str(exc))
            self._orphan_check.set()
        finally:
            if budget is not None:
                self.budgets.end(budget, run.id, won)
            self.claiming.discard(key)
            self._claiming_ahead.discard(key)
            self._claim_cost.pop(key, None)
            self._claiming_runs.discard(run.id)
            self._claiming_jobs.discard((run.project, run.job))
            self.kick()

    def _hold(self, run_id: str, budget_slots: list[str]) -> None:
        """The budget slots a started run holds: its completion deletes them (D275)."""
        ex = self.running.get(run_id)
        if ex is not None and budget_slots:
            ex.budget_slots = tuple(budget_slots)

    async def _adopt_orphans(self) -> None:
        """Claims bound to our lease that no execution holds (a claim whose reply was lost) are
        adopted: the run is started as if the claim had answered."""
        while True:
            await woken(self._orphan_check, self.orphan_every)
            self._orphan_check.clear()
            try:
                res = await self.etcd.range_all(self.keys.claims())
                for kv in res.kvs:
                    run_id = kv.key.rsplit("/", 1)[-1]
                    if kv.lease != self.session.lease_id or run_id in self.running:
                        continue
                    if run_id in self._claiming_runs:
                        continue
                    claim = json.loads(kv.value)
                    if self._executed.get(run_id) == claim.get("attempt"):
                        # We ran this attempt and could not record its end: never run it again
                        # here. Giving the claim up lets the leader record the attempt as lost
                        # (retried if its policy says so), as if this node had died.
                        # (or its completion landed after this read: then the claim is gone
                        # and the compare leaves everything as it is, D382)
                        held = self.budgets.releases(self.budgets.held_by(run_id))  # D275
                        gave_up = await self.etcd.txn(
                            [Compare.created(kv.key, kv.create_revision)],
                            [Op.delete(kv.key), *held],
                        )
                        if gave_up.succeeded:
                            log.error("gave up the claim of an attempt already run", run=run_id)
                        continue
                    project = claim["project"]
                    run = await self.store.get_run(project, run_id)
                    if run.status != "running" or run.node != self.node_id:
                        continue
                    slots = await self.etcd.range(self.keys.slots(run.project, run.job))
                    slot = next((s.key for s in slots.kvs if s.value.decode() == run_id), None)
                    if run_id in self.running or run_id in self._claiming_runs:
                        continue  # started meanwhile: an own claim's reply came (D448)
                    log.warning("adopting a claim whose reply was lost", run=run_id)
                    self._start(run, kv.create_revision, slot, int(claim.get("weight", 1)))
                    self._hold(run_id, self.budgets.held_by(run_id))
            except (Unavailable, LookupError) as exc:
                log.info("orphan check failed", error=str(exc))
                self._orphan_check.set()
                await asyncio.sleep(1)
