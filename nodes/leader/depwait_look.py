"""One look at a waiting slot (D294): read its job and its upstreams, decide with the pure
``cluster.depends.decide``, then wait on, release or end it in one transaction fenced on
leadership and comparing the waiting key's mod revision. The looking part of
:class:`~nodes.leader.depwait.DependencyWaiter` (its state is the waiter's)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from cluster import outcomes
from cluster.depends import SKIPPED_DEPENDENCY, Waiting, decide, gate_of
from cluster.depends_store import (
    alarm_ops,
    end_ops,
    give_up_at,
    judge_waiting,
    release_record_ops,
    remint,
    spec_of,
    waited_doc,
)
from cluster.errors import LostOwnership, Unavailable
from cluster.etcd import Compare, Etcd, Op, OutcomeUnknown
from cluster.keys import Keys
from cluster.models import Run
from cluster.outcomes import slot_deadlines
from cluster.slotlog import workflow_tick_ops
from cluster.store import Store
from cluster.workflow_store import create_execution_ops, new_execution
from cluster.workflows import Execution, Workflow
from nodes import metrics
from nodes.leader.loops import RETRY, DueQueue
from nodes.leader.slotdoc import slot_doc

if TYPE_CHECKING:
    from cluster.election import Leadership

log = structlog.get_logger("nodes.leader.depwait")


class Looking:
    """The looking part of ``DependencyWaiter`` (its state is the waiter's)."""

    etcd: Etcd
    keys: Keys
    store: Store
    lead: Leadership
    clock: Callable[[], datetime]
    max_wait: float
    outbox: Callable[[], None]
    waiting: dict[str, Waiting]
    due: DueQueue[str]
    _dirty: set[str]
    _paced: Callable[[str], datetime]
    released: int
    ended: int

    async def _look(self, key: str) -> None:
        w = self.waiting.get(key)
        if w is None:
            return
        now = self.clock()
        job, same_doc = await slot_doc(self.etcd, self.keys, w.project, w.job)  # read: D366
        spec = spec_of(job, w.schedule) if job is not None else None
        if job is None:
            if await self._unreadable(w, now):
                return
            await self._txn(w, [Op.delete(w.key)])  # deleted: its waiting keys went with it
            return
        if spec is None or not job.enabled:
            what = "disabled" if not job.enabled else "its schedule changed"
            await self._end(w, outcomes.DISABLED.name, f"the job was {what} while it waited", {})
            return
        tick = await self.etcd.get(w.tick_key)
        if tick is not None and not json.loads(tick.value).get("waiting"):
            # the slot was handled otherwise (a backfill wrote its tick first): not ours to fire
            await self._txn(w, [Op.delete(w.key)])
            return
        # the release compares the slot's record as read (absent: pruned meanwhile, written anew)
        on_tick = (
            Compare.modified(w.tick_key, tick.mod_revision)
            if tick is not None
            else Compare.absent(w.tick_key)
        )
        gate = gate_of(spec.not_before, w.tick, spec.timezone)
        pair = slot_deadlines(job).get(w.schedule)
        deadline = None
        if pair is not None:
            first = pair[0] or pair[1]
            deadline = w.tick + timedelta(seconds=first) if first else None
        try:
            judgements = await judge_waiting(self.etcd, self.keys, w.project, spec, w)
        except (Unavailable, OutcomeUnknown, LostOwnership):
            raise
        except Exception as exc:  # an upstream record this version cannot read (D332)
            give_up = give_up_at(w, spec, self.max_wait)
            missed = deadline is not None and deadline <= give_up and now >= deadline
            if not missed and now < give_up:
                raise  # looked at again in 30 s (``_guarded``)
            out = outcomes.DEADLINE_MISSED.name if missed else SKIPPED_DEPENDENCY.name
            why = f"its upstreams could not be read ({type(exc).__name__}: {str(exc)[:200]})"
            await self._end(w, out, why, {})
            return
        verdict = decide(
            judgements,
            now=now,
            gate=gate,
            give_up=give_up_at(w, spec, self.max_wait),
            deadline=deadline,
        )
        waited = waited_doc(judgements, gate)
        if verdict.action == "wait":
            when = verdict.next_check
            if key in self._dirty:  # an upstream moved while we looked
                when = min(when, self._paced(key)) if when is not None else self._paced(key)
            self.due.set(key, when, wake=False)
            return
        if verdict.action == "end":
            assert verdict.outcome is not None
            await self._end(w, verdict.outcome, verdict.reason, waited)
            return
        if isinstance(job, Workflow):  # its execution, and the slot's record (D234)
            minted = Execution.model_validate(w.run)
            ex = new_execution(  # as the workflow is now (D334), keeping the minted id
                self.store,
                job,
                parameters=spec.parameters,
                source=minted.source,
                scheduled_at=minted.scheduled_at,
            ).model_copy(update={"id": minted.id, "created_at": minted.created_at})
            ops = [Op.delete(w.key), *create_execution_ops(self.keys, ex)]
            ops += workflow_tick_ops(self.keys, job, ex, w.tick_key)
            new = Compare.absent(self.keys.execution(w.project, ex.id))
            if await self._txn(w, ops, [new, on_tick, same_doc]):
                self.released += 1
                log.info("waiting workflow slot released", job=w.job, execution=ex.id)
            return
        minted = Run.model_validate(w.run)
        # the run starts under the job as it is now (D334): an edit while the slot waited (its
        # command, run_as, env) applies, as does the project's run-history quota (D318)
        run = remint(self.store.new_run, job, spec, minted)
        ops = [Op.delete(w.key), *self.store.create_run_ops(run)]
        ops += release_record_ops(self.keys, w, run.id, pair, waited, now)
        new = Compare.absent(self.keys.run(run.project, run.id))
        if await self._txn(w, ops, [new, on_tick, same_doc]):
            self.released += 1
            if pair is None:  # settled now (with deadlines the slot watcher counts it)
                metrics.SLOT_OUTCOMES.labels(
                    w.project, w.job, outcomes.outcome_of_fate(w.fate)
                ).inc()
            log.info(
                "waiting slot released",
                job=f"{w.project}/{w.job}",
                tick=w.tick.isoformat(),
                run=run.id,
                reason=verdict.reason,
            )

    async def _unreadable(self, w: Waiting, now: datetime) -> bool:
        """A job the scheduler's cache does not hold but etcd does (one it cannot read, or not
        yet read): its slot is not dropped (that would strand its tick record ``waiting``), it
        waits — and ends ``skipped_dependency`` at the default ``max_wait`` (D332)."""
        if w.job.startswith("@") or await self.etcd.get(self.keys.job(w.project, w.job)) is None:
            return False
        if now >= w.tick + timedelta(seconds=self.max_wait):
            why = "max_wait passed: the job's document cannot be read by the leader"
            await self._end(w, SKIPPED_DEPENDENCY.name, why, {})
        else:
            self.due.set(w.key, now + timedelta(seconds=30), wake=False)
        return True

    async def _end(self, w: Waiting, outcome: str, reason: str, waited: dict[str, Any]) -> None:
        ops = end_ops(self.keys, w, outcome, reason, waited, self.clock())
        info = outcomes.OUTCOMES[outcome]
        if info.bad:  # the alarm and the notification, as the slot watcher writes them (D232)
            ops += alarm_ops(self.keys, w, outcome, reason)
        if await self._txn(w, ops):
            self.ended += 1
            if info.bad:
                self.outbox()
            metrics.SLOT_OUTCOMES.labels(w.project, w.job, outcome).inc()
            log.info(
                "waiting slot ended",
                job=f"{w.project}/{w.job}",
                tick=w.tick.isoformat(),
                outcome=outcome,
                reason=reason,
            )

    async def _txn(self, w: Waiting, ops: list[Any], compares: list[Any] | None = None) -> bool:
        """One fenced write comparing the waiting key as we know it; False when it moved."""
        res = await self.etcd.txn(
            [self.lead.fence(), Compare.modified(w.key, w.rev), *(compares or [])],
            ops,
            [self.lead.probe()],
        )
        if not res.succeeded:
            self.lead.check_fenced(res, "fenced waiting-slot write rejected")
            # moved: the watch brings the new version (or its deletion); look again shortly in
            # case it was the slot's record that moved
            self.due.set(w.key, self.clock() + RETRY, wake=False)
            return False
        return True
