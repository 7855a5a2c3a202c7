"""The scheduling loop that runs on the elected leader only.

It keeps an in-memory picture of jobs, schedule states and active runs (``nodes.leader.jobcache``:
one consistent read, then watches from that revision), sleeps until the next tick is due, decides
with the pure functions of ``cluster.plan`` and writes each job's decision in ONE transaction
(jobs due together share transactions, each job keeping its own compares, D91) that compares

- the leader's election key create revision (fencing: a deposed leader's write fails),
- the job's schedule-state mod revision (CAS: a tick is handled once),
- every tick key it creates is absent (idempotency key per tick).

Those transactions, and what their answers mean, are ``nodes.leader.tickwrite`` (``TickWrites``,
a base of ``Scheduler``); this module plans, batches and guards them.

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
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from cluster.election import Leadership
from cluster.errors import LostOwnership, Unavailable
from cluster.etcd import Etcd, OutcomeUnknown
from cluster.keys import Keys
from cluster.shards import Shard
from cluster.store import MAX_TXN_OPS, Store
from cluster.tickplan import TXN_BYTES, plan_job
from cluster.watch import follow
from nodes import metrics
from nodes.leader.deadlines import SlotWatcher, count_fates
from nodes.leader.feed import Feed
from nodes.leader.jobcache import GUARDED, JobCache, JobKey
from nodes.leader.loading import PASS_JOBS, YIELD_EVERY
from nodes.leader.loops import periodic
from nodes.leader.missed import report_missed
from nodes.leader.ownruns import reserve, settle
from nodes.leader.reaper import Reaper
from nodes.leader.retention import Archiver, RunRetention
from nodes.leader.rulecache import RuleCache
from nodes.leader.tickwrite import Planned, TickWrites
from nodes.leader.workflows import WorkflowEngine

if TYPE_CHECKING:
    from nodes.worker.ownclaims import OwnClaims

log = structlog.get_logger(__name__)


BATCH_RUNS_PER_JOB = 2  # plans with more runs (catch-up) keep a transaction of their own
RECONCILE_EVERY = 10.0
PRUNE_EVERY = 60.0


class Scheduler(TickWrites):
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

    async def _write_guarded(self, plan: Planned) -> None:
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
        single: list[Planned] = []  # planned, written on its own
        # each plan with its compares and ops, built once (they were built twice: a fifteenth of
        # a leader's loop at 800 runs/s went to serialising runs a second time)
        chunks: list[list[tuple[Planned, list[Any], list[Any]]]] = []
        chunk: list[tuple[Planned, list[Any], list[Any]]] = []
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

    # -- firing --------------------------------------------------------------------------------

    async def fire(self, jk: JobKey) -> None:
        """Plan one job at ``now`` and write the decision in one fenced transaction."""
        plan = self._plan(jk)
        if plan is not None and await self._write(plan):
            self.cache.schedule_at(jk, plan.next_due)

    def _plan(self, jk: JobKey) -> Planned | None:
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
        return Planned(jk, entry, plan.state, plan.runs, plan.cancels, plan.next_due, plan.records)
