"""The leader's tick writes: one job's decision (or several jobs' due together, D91) as ONE
transaction fenced on leadership, and what its answer means. The writing part of
:class:`~nodes.leader.scheduler.Scheduler` (its state is the scheduler's).

Each job's part of a transaction compares

- the job's schedule-state mod revision (CAS: a tick is handled once),
- the job's mod revision (a job disabled meanwhile is not fired, D369) and its active runs (D370),
- every tick key and run key it creates is absent (idempotency key per tick),

and a transaction carries the leader's election key create revision once (fencing: a deposed
leader's write fails) and the rules guard (D339). A refused write reads back why and plans again;
a lost reply is never retried blindly (the scheduler re-reads the state and plans again).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from cluster.election import Leadership
from cluster.errors import LeaseGone, Rejected, Unavailable
from cluster.etcd import Compare, Etcd, Op, OutcomeUnknown
from cluster.keys import Keys
from cluster.models import Run
from cluster.slotlog import tick_ops
from cluster.store import MAX_TXN_OPS, Store, dumps
from nodes import metrics
from nodes.leader.deadlines import count_settled
from nodes.leader.jobcache import JobCache, JobEntry, JobKey
from nodes.leader.ownruns import Own, create_ops, reserve, settle, unique
from nodes.leader.rulecache import RuleCache

if TYPE_CHECKING:
    from nodes.worker.ownclaims import OwnClaims

log = structlog.get_logger("nodes.leader.scheduler")  # where operators have always seen it


@dataclass
class Planned:
    """One job's decision at a tick: the new schedule state and the runs to create."""

    jk: JobKey
    entry: JobEntry
    state: dict[str, Any]
    runs: list[tuple[Run, str]]  # (run, tick key)
    cancels: list[str]
    next_due: datetime | None
    records: list[tuple[str, str]] = field(default_factory=list)  # (tick key, record), no run
    own: Own = field(default_factory=dict)  # runs its node's worker claims at creation (D444)
    claim: bool = True  # False: every run queued (a retry after a refused own claim)


class TickWrites:
    """The writing part of ``Scheduler`` (its state is the scheduler's)."""

    etcd: Etcd
    keys: Keys
    store: Store
    lead: Leadership
    clock: Callable[[], datetime]
    cache: JobCache
    rules: RuleCache
    own: OwnClaims | None
    active: dict[JobKey, set[str]]
    active_job: dict[str, JobKey]
    fired: int
    _sem: asyncio.Semaphore
    _write_guarded: Callable[[Planned], Awaitable[None]]

    async def _write_chunk(self, planned: list[tuple[Planned, list[Any], list[Any]]]) -> None:
        """One fenced transaction for several jobs' plans (see ``Scheduler._fire_batch``)."""
        compares: list[Any] = [self.lead.fence(), self.rules.guard()]
        ops: list[Any] = []
        chunk = [plan for plan, _, _ in planned]
        for _, c, o in planned:
            compares += c
            ops += o
        compares = unique(compares)  # the own claims' shared guards once (D444)
        sent = False
        try:
            async with self._sem:
                sent = True
                res = await self.etcd.txn(compares, ops, [self.lead.probe()])
        except BaseException as exc:  # the node's own claims end first (D444); unsent: released
            settle(self.own, (plan.own for plan in chunk), None, exc if sent else None)
            if isinstance(exc, Unavailable):  # OutcomeUnknown too
                # A lost reply may have applied: re-read each job's state and plan again shortly.
                if isinstance(exc, OutcomeUnknown):
                    metrics.OUTCOME_UNKNOWN.labels("tick").inc()
                log.warning(
                    "batched tick write failed; re-reading", jobs=len(chunk), error=str(exc)
                )
                for plan in chunk:
                    await self.cache.refresh_state(plan.jk)
                    self.cache.schedule_at(plan.jk, self.clock() + timedelta(seconds=0.5))
                return
            if not isinstance(exc, Exception):
                raise
            # e.g. a request etcd refuses: nothing applied; go job by job (queued, D444)
            log.exception("batched tick write refused; writing its jobs one by one")
            await asyncio.gather(*(self._write_guarded(replace(p, claim=False)) for p in chunk))
            return
        settle(self.own, (plan.own for plan in chunk), res.revision if res.succeeded else None)
        if res.succeeded:
            for plan in chunk:
                self._committed(plan.jk, plan.entry, plan.state, plan.runs, res.revision)
                self.cache.schedule_at(plan.jk, plan.next_due)
            return
        self.lead.check_fenced(res, "fenced tick write rejected")
        log.info("batched tick write rejected; writing its jobs one by one", jobs=len(chunk))
        await asyncio.gather(*(self._write_guarded(replace(p, claim=False)) for p in chunk))  # D446

    async def _write(self, plan: Planned) -> bool:
        """One fenced transaction; False when the state moved (re-planned at once)."""
        jk, entry, state, runs, cancels, records = (
            plan.jk, plan.entry, plan.state, plan.runs, plan.cancels, plan.records
        )  # fmt: skip
        state_key = self.keys.schedule_state(*jk)
        reserve(self.own, runs if plan.claim else [], plan.own)  # its node's worker's (D444)
        compares, ops = self._write_ops(plan)
        for slot_key, record in records:  # slots skipped or deferred without a run (D238)
            compares.append(Compare.absent(slot_key))
            ops.append(Op.put(slot_key, record))
        compares[:0] = [self.lead.fence(), self.rules.guard()]
        compares = unique(compares)  # the own claims' shared guards once (D444)
        for run_id in cancels[: max(0, MAX_TXN_OPS - len(ops))]:
            ops.append(
                Op.put(
                    self.keys.control(run_id),
                    dumps({"action": "cancel", "at": self.clock(), "reason": "replaced"}),
                )
            )
        tick_keys = [tick_key for _, tick_key in runs] + [k for k, _ in records]
        probes = [self.lead.probe(), Op.get(state_key)]
        probes += [Op.get(k, keys_only=True) for k in tick_keys]
        probes.append(Op.get(self.keys.rules_marker(), keys_only=True))
        had_own = bool(plan.own)
        try:
            res = await self.etcd.txn(compares, ops, probes)
        except BaseException as exc:
            settle(self.own, [plan.own], None, exc)  # the node's own claims end first (D444)
            if had_own and isinstance(exc, LeaseGone | Rejected):
                return await self._write(replace(plan, claim=False))  # nothing applied: queued
            raise
        settle(self.own, [plan.own], res.revision if res.succeeded else None)
        if not res.succeeded and had_own:  # an own claim's compare may have refused it (D444)
            self.lead.check_fenced(res, "fenced tick write rejected")
            return await self._write(replace(plan, claim=False))
        if not res.succeeded:
            self.lead.check_fenced(res, "fenced tick write rejected")
            marker = res.range_kvs(len(probes) - 1)
            seen = marker[0].mod_revision if marker else 0
            if self.rules.moved(seen):  # a rule changed (D339)
                await self.rules.reload(seen)
                log.info("rules changed under the plan; planning again", job="/".join(jk))
                self.cache.schedule_at(jk, self.clock())
                return False
            if await self.cache.job_moved(jk) or await self.cache.actives_moved(jk):  # D369, D370
                self.cache.schedule_at(jk, self.clock())
                return False
            current = res.range_kvs(1)
            current_rev = current[0].mod_revision if current else 0
            taken = {k for i, k in enumerate(tick_keys) if res.range_kvs(2 + i)}
            if current_rev == entry.state_rev and taken:
                # Those ticks already have a run (a backfill made it): they are handled. Write
                # the state and the other runs without them.
                log.info("ticks already handled elsewhere", job="/".join(jk), ticks=len(taken))
                kept = [(r, k) for r, k in runs if k not in taken]
                rest = [(k, v) for k, v in records if k not in taken]
                return await self._write(replace(plan, runs=kept, records=rest))
            entry.state = json.loads(current[0].value) if current else {}
            entry.state_rev = current_rev
            log.info("schedule state moved under us; planning again", job="/".join(jk))
            self.cache.schedule_at(jk, self.clock() + timedelta(seconds=0.05))
            return False
        self._committed(jk, entry, state, runs, res.revision)
        return True

    def _write_ops(self, plan: Planned) -> tuple[list[Any], list[Any]]:
        """Compares (state CAS, absent tick and run keys; no fence) and ops of one job's plan."""
        entry, state, runs, own = plan.entry, plan.state, plan.runs, plan.own
        state_key = self.keys.schedule_state(*plan.jk)
        compares: list[Any] = [Compare.modified(state_key, entry.state_rev)]
        job_key = self.keys.job(entry.job.project, entry.job.name)
        compares.append(Compare.modified(job_key, entry.job_rev))  # disabled meanwhile? (D369)
        compares += self.cache.active_guard((entry.job.project, entry.job.name))  # D370
        ops: list[Any] = [Op.put(state_key, dumps(state))]
        for run, tick_key in runs:
            compares.append(Compare.absent(tick_key))
            compares.append(Compare.absent(self.keys.run(run.project, run.id)))
            fate = "skipped" if run.status == "skipped" else run.source
            ops += create_ops(self.own, run, own, compares) or self.store.create_run_ops(run)
            ops += tick_ops(self.keys, run, tick_key, fate, entry.deadlines.get(run.schedule or ""))
        return compares, ops

    def _committed(
        self,
        jk: JobKey,
        entry: JobEntry,
        state: dict[str, Any],
        runs: list[tuple[Run, str]],
        revision: int,
    ) -> None:
        """Book-keeping once a job's plan is written at ``revision``."""
        entry.state, entry.state_rev = state, revision
        wall = time.time()
        for run, _ in runs:
            if run.status != "skipped":
                self.active[jk].add(run.id)
                self.active_job[run.id] = jk
                self.fired += 1
            metrics.child(metrics.TICKS, "skipped" if run.status == "skipped" else "fired").inc()
            count_settled(jk, run, wall, entry.deadlines)  # the slots settled at fire (D230)
            if run.scheduled_at is not None:
                metrics.FIRE_LAG.observe(max(0.0, wall - run.scheduled_at.timestamp()))
            # an on-time tick is in the run record and the metrics already: debug (at hundreds
            # of runs per second a log line each was a visible share of the leader's CPU)
            routine = run.status != "skipped" and run.source == "schedule"
            (log.debug if routine else log.info)(
                "tick fired" if run.status != "skipped" else "tick skipped",
                job="/".join(jk),
                run=run.id,
                tick=run.scheduled_at.isoformat() if run.scheduled_at else None,
                source=run.source,
            )
