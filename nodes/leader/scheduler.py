"""The scheduling loop that runs on the elected leader only.

It keeps an in-memory picture of jobs, schedule states and active runs (``nodes.leader.jobcache``:
one consistent read, then watches from that revision), sleeps until the next tick is due, decides
with the pure functions of ``cluster.plan`` and writes each job's decision in ONE transaction
(jobs due together share transactions, each job keeping its own compares, D91) that compares

- the leader's election key create revision (fencing: a deposed leader's write fails),
- the job's schedule-state mod revision (CAS: a tick is handled once),
- every tick key it creates is absent (idempotency key per tick).

A transaction whose reply is lost is never retried blindly: the loop re-reads the schedule state
and plans again, which finds the tick already handled if the write went through.

The leader also reaps lost runs (a claim that vanished with its worker's lease while the run still
says ``running``) and prunes finished runs beyond each job's ``keep_runs``.

Sharded (``scheduler_shards`` K > 1, D300-D305): a leader per shard fires that shard's jobs, each
fenced by its own election key; the per-cluster loops (reaper, retention, slot deadlines,
workflows, and the notifier beside this loop) run on shard 0's leader only.
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
from cluster.errors import LeaseGone, LostOwnership, Rejected, Unavailable
from cluster.etcd import Compare, Etcd, Op, OutcomeUnknown
from cluster.keys import Keys
from cluster.models import Run
from cluster.shards import Shard
from cluster.slotlog import tick_ops
from cluster.store import MAX_TXN_OPS, Store, dumps
from cluster.tickplan import TXN_BYTES, plan_job
from cluster.watch import follow
from nodes import metrics
from nodes.leader.deadlines import SlotWatcher, count_fates, count_settled
from nodes.leader.feed import Feed
from nodes.leader.jobcache import GUARDED, JobCache, JobEntry, JobKey
from nodes.leader.loading import PASS_JOBS, YIELD_EVERY
from nodes.leader.loops import periodic
from nodes.leader.missed import report_missed
from nodes.leader.ownruns import Own, create_ops, reserve, settle, unique
from nodes.leader.reaper import Reaper
from nodes.leader.retention import Archiver, RunRetention
from nodes.leader.rulecache import RuleCache
from nodes.leader.workflows import WorkflowEngine

if TYPE_CHECKING:
    from nodes.worker.ownclaims import OwnClaims

log = structlog.get_logger(__name__)


BATCH_RUNS_PER_JOB = 2  # plans with more runs (catch-up) keep a transaction of their own
RECONCILE_EVERY = 10.0
PRUNE_EVERY = 60.0


@dataclass
class _Planned:
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


class Scheduler:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        store: Store,
        leadership: Leadership,
        *,
        clock: Callable[[], datetime],
        node_id: str,
        archive: Archiver | None = None,
        ahead: float = 0.0,
        shard: Shard | None = None,
        feed: Feed | None = None,
        own: OwnClaims | None = None,
    ) -> None:
        self.own = own  # this node's worker, for the runs it takes at their creation (D444)
        self.ahead = ahead  # seconds: runs are written this long before their tick (D120)
        self.etcd = etcd
        self.keys = keys
        self.store = store
        self.lead = leadership
        self.clock = clock
        self.node_id = node_id
        self.shard = shard or Shard()  # which jobs this leader fires (D301)
        self.cache = JobCache(
            etcd,
            keys,
            clock=clock,
            shard=self.shard,
            feed=feed,  # the node's watches, shared by the shards it leads (D356)
        )
        if self.shard.singletons:  # the slot watcher runs on shard 0's leader only (D302)
            self.cache.on_job_changed = lambda jk: self.slots.on_job(jk)
            self.cache.on_run_moved = lambda run_id, jk: self.slots.on_run_moved(run_id, jk)
        self.jobs = self.cache.jobs
        self.active = self.cache.active
        self.active_job = self.cache.active_job
        self.due = self.cache.due
        self._sem = asyncio.Semaphore(64)
        self.fired = 0
        self.first_pass = asyncio.Event()  # the new leader's first pass is written (D411)
        self._missed: dict[JobKey, int] = {}  # ticks missed in this pass, reported after it (D385)
        self.rules = RuleCache(etcd, keys)  # calendars, blackout windows, freeze (D238, D339)
        self.workflows = WorkflowEngine(
            etcd, keys, store, leadership, clock=clock, rules=self.rules
        )
        job_of = self.cache.job_of
        self.slots = SlotWatcher(etcd, keys, store, leadership, clock=clock, job_of=job_of)
        self.workflows.runs_from = self.slots.deps.share_runs  # one run index stream (D421)
        self.reaper = Reaper(
            etcd,
            keys,
            store,
            leadership,
            active_job=self.active_job,
            actives_rev=lambda: self.cache.actives_rev,
        )
        self.retention = RunRetention(
            etcd,
            keys,
            leadership,
            clock=clock,
            job_of=job_of,
            active=self.active,
            archive=archive,
        )

    # -- state (the job cache, nodes.leader.jobcache) -------------------------------------------

    async def _load(self) -> int:
        rev = await self.cache.load()  # D262
        t = time.perf_counter()
        await self.rules.load(rev)
        self.cache.took["rules"] = time.perf_counter() - t
        for key in list(self.jobs):  # the first pass plans every job (in slices, D262)
            self.cache.reschedule(key, self.clock())
        return rev

    # -- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Lead until cancelled; raises LostOwnership when a fenced write shows we were deposed."""
        try:
            await self._lead()
        finally:
            self.cache.close()  # leaves the node's shared watches (D356)

    async def _lead(self) -> None:
        rev = await self._load()
        took = {k: round(v * 1000, 1) for k, v in self.cache.took.items()}
        log.info("scheduler leading", jobs=len(self.jobs), revision=rev, took_ms=took)
        async with asyncio.TaskGroup() as tg:
            self.cache.follow(tg, rev)
            self.rules.follow(tg, rev)
            tg.create_task(self._tick_loop())
            if not self.shard.singletons:
                # the per-cluster loops run on shard 0's leader only (D302); this shard's held
                # slots count against the waiting quota here too
                tg.create_task(self.slots.deps.count(rev))
                return
            on_claim = self.slots.claims(self.reaper.on_claim_event)
            tg.create_task(follow(self.etcd, self.keys.claims(), rev, on_claim))
            tg.create_task(self.slots.run(rev, list(self.jobs)))
            # after the first pass: the ticks first, then the reads these start with (D411)
            tg.create_task(
                self.after_first_pass(lambda: periodic(RECONCILE_EVERY, self.reaper.reconcile))
            )
            tg.create_task(
                self.after_first_pass(lambda: periodic(PRUNE_EVERY, self.retention.prune))
            )
            tg.create_task(self.after_first_pass(self.workflows.run))

    async def after_first_pass(self, work: Callable[[], Awaitable[object]]) -> None:
        """Start ``work`` once the first pass over every job is written (or none was due): a new
        leader's loops that read much at their start wait for it, so its ticks go first (D411)."""
        await self.first_pass.wait()
        await work()

    async def _tick_loop(self) -> None:
        first = time.perf_counter()  # the first pass (every job, D262) is logged with its time
        while True:
            due = [jk for jk in self.due.pop_due(PASS_JOBS) if jk in self.jobs]
            if len(due) > 1:
                await self._fire_batch(due)
            elif due:
                await self._fire_guarded(due[0])
            if not self.first_pass.is_set():  # up to PASS_JOBS jobs: the first slice of it
                ms = round((time.perf_counter() - first) * 1000, 1)
                log.info("scheduler first pass written", jobs=len(due), ms=ms)
                self.first_pass.set()
            if not due:
                await self.due.wait()
            report_missed(self._missed)  # D385

    async def _fire_guarded(self, jk: JobKey) -> None:
        await self._guarded(jk, lambda: self.fire(jk))

    async def _write_guarded(self, plan: _Planned) -> None:
        async def write() -> None:
            if await self._write(plan):
                self.cache.schedule_at(plan.jk, plan.next_due)

        await self._guarded(plan.jk, write)

    async def _guarded(self, jk: JobKey, action: Callable[[], Awaitable[None]]) -> None:
        async with self._sem:
            try:
                await action()
            except LostOwnership:
                raise
            except (Unavailable, OutcomeUnknown) as exc:
                # Re-read and plan again shortly: a lost reply may have applied.
                if isinstance(exc, OutcomeUnknown):
                    metrics.OUTCOME_UNKNOWN.labels("tick").inc()
                log.warning("tick write failed; re-reading", job="/".join(jk), error=str(exc))
                await self.cache.refresh_state(jk)
                self.cache.schedule_at(jk, self.clock() + timedelta(seconds=0.5))
            except Exception:
                # One broken job must never stop the others: park it and try again later.
                log.exception("cannot schedule job; retrying in 30 s", job="/".join(jk))
                metrics.TICKS.labels("error").inc()
                self.cache.schedule_at(jk, self.clock() + timedelta(seconds=30))

    async def _fire_batch(self, due: list[JobKey]) -> None:
        """Fire several due jobs: small plans share fenced transactions (≤ MAX_TXN_OPS each).

        A shared transaction carries every job's own compares (state CAS, absent tick and run
        keys) and one fence, so it commits all of its jobs or none. When etcd rejects it while
        we still lead (one job's state moved, a backfill took a tick), each of its jobs is
        written again alone, where the single-job path sorts it out.
        """
        alone: list[JobKey] = []
        single: list[_Planned] = []  # planned, written on its own
        # each plan with its compares and ops, built once (they were built twice: a fifteenth of
        # a leader's loop at 800 runs/s went to serialising runs a second time)
        chunks: list[list[tuple[_Planned, list[Any], list[Any]]]] = []
        chunk: list[tuple[_Planned, list[Any], list[Any]]] = []
        n_cmp = n_ops = n_bytes = 0
        try:
            for i, jk in enumerate(due):
                if i and i % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # keep-alives, the API and the workers run meanwhile
                try:
                    plan = self._plan(jk)
                except Exception:
                    alone.append(jk)  # the single-job path logs it and parks the job
                    continue
                if plan is None:
                    continue
                if plan.cancels or plan.records or len(plan.runs) > BATCH_RUNS_PER_JOB:
                    alone.append(jk)
                    continue
                if plan.entry.job.overlap in GUARDED:  # its refusal must not split a batch (D370)
                    single.append(plan)
                    continue
                reserve(self.own, plan.runs, plan.own)
                compares, ops = self._write_ops(plan)
                size = sum(op.ByteSize() for op in ops)
                if chunk and (
                    n_cmp + len(compares) > MAX_TXN_OPS - 1
                    or n_ops + len(ops) > MAX_TXN_OPS
                    or n_bytes + size > TXN_BYTES
                ):
                    chunks.append(chunk)
                    chunk, n_cmp, n_ops, n_bytes = [], 0, 0, 0
                chunk.append((plan, compares, ops))
                n_cmp, n_ops, n_bytes = n_cmp + len(compares), n_ops + len(ops), n_bytes + size
            if chunk:
                chunks.append(chunk)
            outcomes = await asyncio.gather(
                *(self._fire_guarded(jk) for jk in alone),
                *(self._write_guarded(plan) for plan in single),
                *(
                    self._write_chunk(c) if len(c) > 1 else self._write_guarded(c[0][0])
                    for c in chunks
                ),
                return_exceptions=True,  # every write answers (and ends its own claims) first
            )
            for outcome in outcomes:  # then LostOwnership (the only one they let through)
                if isinstance(outcome, BaseException):
                    raise outcome
        finally:  # what was reserved and never written goes back (cancelled, D444)
            settle(self.own, (p.own for c in [*chunks, chunk] for p, _, _ in c), None)

    async def _write_chunk(self, planned: list[tuple[_Planned, list[Any], list[Any]]]) -> None:
        """One fenced transaction for several jobs' plans (see :meth:`_fire_batch`)."""
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

    # -- firing --------------------------------------------------------------------------------

    async def fire(self, jk: JobKey) -> None:
        """Plan one job at ``now`` and write the decision in one fenced transaction."""
        plan = self._plan(jk)
        if plan is not None and await self._write(plan):
            self.cache.schedule_at(jk, plan.next_due)

    def _plan(self, jk: JobKey) -> _Planned | None:
        """Decide one job's due ticks at ``now`` (``cluster.tickplan``); None when there is
        nothing to write (the job is re-armed for its next due time then)."""
        entry = self.jobs.get(jk)
        if entry is None or not entry.job.enabled:
            return None
        plan = plan_job(
            entry.job,
            entry.schedules,
            entry.state,
            self.active.get(jk, ()),
            now=self.clock(),
            ahead=self.ahead,
            keys=self.keys,
            new_run=self.store.new_run,
            rules=self.rules.for_job(entry.job),
        )
        self.slots.deps.hold(entry.job, plan, entry.state)  # slots waiting on upstreams (D294)
        count_fates(jk, plan.fates)  # ticks missed or disabled, and their slots (D231)
        for fate, n in plan.fates:
            if fate == "missed":
                self._missed[jk] = self._missed.get(jk, 0) + n
        if not plan.writes:
            self.cache.schedule_at(jk, plan.next_due)
            return None
        return _Planned(jk, entry, plan.state, plan.runs, plan.cancels, plan.next_due, plan.records)

    async def _write(self, plan: _Planned) -> bool:
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

    def _write_ops(self, plan: _Planned) -> tuple[list[Any], list[Any]]:
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
