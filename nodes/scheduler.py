"""The scheduling loop that runs on the elected leader only.

It keeps an in-memory picture of jobs, schedule states and active runs (one consistent read, then
watches from that revision), sleeps until the next tick is due, decides with the pure functions of
``cluster.plan`` and writes each job's decision in ONE transaction (jobs due together share
transactions, each job keeping its own compares, D91) that compares

- the leader's election key create revision (fencing: a deposed leader's write fails),
- the job's schedule-state mod revision (CAS: a tick is handled once),
- every tick key it creates is absent (idempotency key per tick).

A transaction whose reply is lost is never retried blindly: the loop re-reads the schedule state
and plans again, which finds the tick already handled if the write went through.

The leader also reaps lost runs (a claim that vanished with its worker's lease while the run still
says ``running``) and prunes finished runs beyond each job's ``keep_runs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from cluster.cron import Schedule, parse_schedule, ticks_between
from cluster.election import Leadership
from cluster.errors import LostOwnership, Unavailable
from cluster.etcd import Compacted, Compare, Etcd, Op, OutcomeUnknown
from cluster.keys import Keys
from cluster.models import Job, Run, ScheduleSpec
from cluster.plan import TickSpan, overlap_action, plan_schedule
from cluster.retention import DELETED_JOB_KEEP_DAYS, DELETED_JOB_KEEP_RUNS, expired_runs
from cluster.store import MAX_TXN_OPS, Store, dumps, tick_record
from cluster.workflows import is_task_job
from nodes import metrics
from nodes.workflow_engine import WorkflowEngine

log = structlog.get_logger(__name__)

Archiver = Callable[[str, str, dict[str, bytes]], Awaitable[object]]
"""``(project, job, {run_id: record JSON})``: keeps records safe before they leave etcd."""

RUNS_PER_TXN = 16
TXN_BYTES = 512 * 1024
BATCH_RUNS_PER_JOB = 2  # plans with more runs (catch-up) keep a transaction of their own
EVENTS_KEPT = 20
RECONCILE_EVERY = 10.0
LOST_CHECK_DELAY = 0.5  # s after a claim's deletion before a still-active run is read back
LOST_CHECK_MAX = 2.0  # ... or at most this long when the active keys' watch has not caught up
PRUNE_EVERY = 60.0

JobKey = tuple[str, str]


@dataclass
class JobEntry:
    job: Job
    schedules: list[tuple[ScheduleSpec, Schedule]]
    state: dict[str, Any] = field(default_factory=dict)
    state_rev: int = 0
    next_due: datetime | None = None
    generation: int = 0


def _parse_job(job: Job) -> list[tuple[ScheduleSpec, Schedule]]:
    out = []
    for spec in job.schedules:
        if spec.enabled:
            sched = parse_schedule(
                cron=spec.cron,
                at=spec.at,
                timezone=spec.timezone,
                hash_key=f"{job.project}/{job.name}",
            )
            out.append((spec, sched))
    return out


def _span(span: TickSpan, fate: str, fp: str) -> dict[str, Any]:
    return {
        "fate": fate,
        "schedule": fp,
        "first": span.first.isoformat(),
        "last": span.last.isoformat(),
        "count": span.count,
        "more": span.more,
    }


@dataclass
class _Planned:
    """One job's decision at a tick: the new schedule state and the runs to create."""

    jk: JobKey
    entry: JobEntry
    state: dict[str, Any]
    runs: list[tuple[Run, str]]  # (run, tick key)
    cancels: list[str]
    next_due: datetime | None


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
    ) -> None:
        self.archive = archive
        self.ahead = ahead  # seconds: runs are written this long before their tick (D120)
        self.etcd = etcd
        self.keys = keys
        self.store = store
        self.lead = leadership
        self.clock = clock
        self.node_id = node_id
        self.jobs: dict[JobKey, JobEntry] = {}
        self.active: dict[JobKey, set[str]] = defaultdict(set)
        self.active_job: dict[str, JobKey] = {}
        self._heap: list[tuple[datetime, int, JobKey]] = []
        self._wake = asyncio.Event()
        self._lost_checks: set[str] = set()
        self._actives_rev = 0  # revision of the newest active-key event seen
        self._sem = asyncio.Semaphore(64)
        self._tasks: set[asyncio.Task[None]] = set()
        self.fired = 0
        self.workflows = WorkflowEngine(self)

    # -- state ---------------------------------------------------------------------------------

    async def _load(self) -> int:
        jobs = await self.etcd.range_all(self.keys.jobs())
        rev = jobs.revision
        states = await self.etcd.range_all(self.keys.schedule_states(), revision=rev)
        actives = await self.etcd.range_all(self.keys.actives(), revision=rev, keys_only=True)
        for kv in jobs.kvs:
            self._on_job(kv.key, kv.value)
        for kv in states.kvs:
            self._on_state(kv.key, kv.value, kv.mod_revision)
        for kv in actives.kvs:
            self._on_active(kv.key, True)
        for key in list(self.jobs):
            self._reschedule(key, self.clock())
        return rev

    def _key_of(self, key: str, base: str) -> tuple[str, ...]:
        return tuple(self.keys.tail(key, base))

    def _on_job(self, key: str, value: bytes | None) -> None:
        project, name = self._key_of(key, self.keys.jobs())[:2]
        jk = (project, name)
        if value is None:
            self.jobs.pop(jk, None)
            return
        try:
            job = Job.model_validate_json(value)
            schedules = _parse_job(job)
        except Exception as exc:  # a job written by a newer version, or corrupted by hand
            log.error("cannot read job; ignoring it", job=f"{project}/{name}", error=str(exc))
            self.jobs.pop(jk, None)
            return
        old = self.jobs.get(jk)
        entry = JobEntry(job, schedules)
        if old is not None:
            entry.state, entry.state_rev, entry.generation = (
                old.state,
                old.state_rev,
                old.generation,
            )
        self.jobs[jk] = entry
        self._reschedule(jk, self.clock())

    def _on_state(self, key: str, value: bytes | None, rev: int) -> None:
        project, name = self._key_of(key, self.keys.schedule_states())[:2]
        entry = self.jobs.get((project, name))
        if entry is None or rev <= entry.state_rev:
            return
        entry.state = json.loads(value) if value else {}
        entry.state_rev = rev if value else 0
        self._reschedule((project, name), self.clock())

    def _on_active(self, key: str, present: bool, rev: int = 0) -> None:
        self._actives_rev = max(self._actives_rev, rev)
        project, job, run_id = self._key_of(key, self.keys.actives())[:3]
        if present:
            self.active[(project, job)].add(run_id)
            self.active_job[run_id] = (project, job)
        else:
            self.active[(project, job)].discard(run_id)
            self.active_job.pop(run_id, None)

    def _reschedule(self, jk: JobKey, now: datetime) -> None:
        entry = self.jobs.get(jk)
        if entry is None:
            return
        entry.generation += 1
        entry.next_due = now if entry.job.enabled and entry.schedules else None
        if entry.next_due is not None:
            heapq.heappush(self._heap, (entry.next_due, entry.generation, jk))
        self._wake.set()

    async def _watch(self, prefix: str, rev: int, handle: Callable[[Any], None]) -> None:
        """Follow a prefix from ``rev``; on a broken stream resume from the last revision seen,
        and after a compaction re-read the whole prefix (deletions seen as a diff)."""
        delay = 0.1
        while True:
            try:
                async for batch in self.etcd.watch(prefix, start_revision=rev + 1):
                    delay = 0.1
                    for ev in batch.events:
                        handle(ev)
                    rev = max(rev, batch.revision)
            except Compacted:
                rev = await self._resync(prefix, handle)
            except Unavailable as exc:
                log.info("leader watch interrupted; resuming", prefix=prefix, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _resync(self, prefix: str, handle: Callable[[Any], None]) -> int:
        from cluster.etcd import KV, Event

        res = await self.etcd.range_all(prefix)
        present = {kv.key for kv in res.kvs}
        known: set[str] = set()
        if prefix == self.keys.jobs():
            known = {self.keys.job(*jk) for jk in self.jobs}
        elif prefix == self.keys.actives():
            known = {self.keys.active(*jk, r) for jk, runs in self.active.items() for r in runs}
        for key in known - present:
            handle(Event("delete", KV(key, b"", 0, res.revision, 0, 0)))
        for kv in res.kvs:
            handle(Event("put", kv))
        return res.revision

    # -- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Lead until cancelled; raises LostOwnership when a fenced write shows we were deposed."""
        rev = await self._load()
        log.info("scheduler leading", jobs=len(self.jobs), revision=rev)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                self._watch(
                    self.keys.jobs(),
                    rev,
                    lambda ev: self._on_job(ev.kv.key, ev.kv.value if ev.kind == "put" else None),
                )
            )
            tg.create_task(
                self._watch(
                    self.keys.schedule_states(),
                    rev,
                    lambda ev: self._on_state(
                        ev.kv.key, ev.kv.value if ev.kind == "put" else None, ev.kv.mod_revision
                    ),
                )
            )
            tg.create_task(
                self._watch(
                    self.keys.actives(),
                    rev,
                    lambda ev: self._on_active(ev.kv.key, ev.kind == "put", ev.kv.mod_revision),
                )
            )
            tg.create_task(self._watch(self.keys.claims(), rev, self._on_claim_event))
            tg.create_task(self._periodic(RECONCILE_EVERY, self.reconcile))
            tg.create_task(self._periodic(PRUNE_EVERY, self.prune))
            tg.create_task(self._tick_loop())
            tg.create_task(self.workflows.run())

    async def _periodic(self, every: float, fn: Callable[[], Any]) -> None:
        while True:
            try:
                await fn()
            except (Unavailable, Compacted) as exc:
                log.warning("periodic leader task failed", task=fn.__name__, error=str(exc))
            await asyncio.sleep(every)

    async def _tick_loop(self) -> None:
        while True:
            now = self.clock()
            due: list[JobKey] = []
            while self._heap and self._heap[0][0] <= now:
                _, gen, jk = heapq.heappop(self._heap)
                entry = self.jobs.get(jk)
                if entry is not None and entry.generation == gen:
                    due.append(jk)
            if len(due) > 1:
                await self._fire_batch(due)
                continue
            if due:
                await self._fire_guarded(due[0])
                continue
            self._wake.clear()
            delay = 3600.0
            if self._heap:
                delay = max(0.0, (self._heap[0][0] - self.clock()).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _fire_guarded(self, jk: JobKey) -> None:
        await self._guarded(jk, lambda: self.fire(jk))

    async def _write_guarded(self, plan: _Planned) -> None:
        async def write() -> None:
            if await self._write(plan.jk, plan.entry, plan.state, plan.runs, plan.cancels):
                self._schedule_at(plan.jk, plan.next_due)

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
                await self._refresh_state(jk)
                self._schedule_at(jk, self.clock() + timedelta(seconds=0.5))
            except Exception:
                # One broken job must never stop the others: park it and try again later.
                log.exception("cannot schedule job; retrying in 30 s", job="/".join(jk))
                metrics.TICKS.labels("error").inc()
                self._schedule_at(jk, self.clock() + timedelta(seconds=30))

    async def _fire_batch(self, due: list[JobKey]) -> None:
        """Fire several due jobs: small plans share fenced transactions (≤ MAX_TXN_OPS each).

        A shared transaction carries every job's own compares (state CAS, absent tick and run
        keys) and one fence, so it commits all of its jobs or none. When etcd rejects it while
        we still lead (one job's state moved, a backfill took a tick), each of its jobs is
        written again alone, where the single-job path sorts it out.
        """
        alone: list[JobKey] = []
        # each plan with its compares and ops, built once (they were built twice: a fifteenth of
        # a leader's loop at 800 runs/s went to serialising runs a second time)
        chunks: list[list[tuple[_Planned, list[Any], list[Any]]]] = []
        chunk: list[tuple[_Planned, list[Any], list[Any]]] = []
        n_cmp = n_ops = n_bytes = 0
        for jk in due:
            try:
                plan = self._plan(jk)
            except Exception:
                alone.append(jk)  # the single-job path logs it and parks the job
                continue
            if plan is None:
                continue
            if plan.cancels or len(plan.runs) > BATCH_RUNS_PER_JOB:
                alone.append(jk)
                continue
            compares, ops = self._write_ops(
                plan.entry, self.keys.schedule_state(*jk), plan.state, plan.runs
            )
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
        await asyncio.gather(
            *(self._fire_guarded(jk) for jk in alone),
            *(self._write_chunk(c) if len(c) > 1 else self._write_guarded(c[0][0]) for c in chunks),
        )

    async def _write_chunk(self, planned: list[tuple[_Planned, list[Any], list[Any]]]) -> None:
        """One fenced transaction for several jobs' plans (see :meth:`_fire_batch`)."""
        compares: list[Any] = [self.lead.fence()]
        ops: list[Any] = []
        chunk = [plan for plan, _, _ in planned]
        for _, c, o in planned:
            compares += c
            ops += o
        try:
            async with self._sem:
                res = await self.etcd.txn(compares, ops, [Op.get(self.lead.key)])
        except (Unavailable, OutcomeUnknown) as exc:
            # A lost reply may have applied: re-read each job's state and plan again shortly.
            if isinstance(exc, OutcomeUnknown):
                metrics.OUTCOME_UNKNOWN.labels("tick").inc()
            log.warning("batched tick write failed; re-reading", jobs=len(chunk), error=str(exc))
            for plan in chunk:
                await self._refresh_state(plan.jk)
                self._schedule_at(plan.jk, self.clock() + timedelta(seconds=0.5))
            return
        except Exception:  # e.g. a request etcd refuses: nothing applied; go job by job
            log.exception("batched tick write refused; writing its jobs one by one")
            await asyncio.gather(*(self._write_guarded(plan) for plan in chunk))
            return
        if res.succeeded:
            for plan in chunk:
                self._committed(plan.jk, plan.entry, plan.state, plan.runs, res.revision)
                self._schedule_at(plan.jk, plan.next_due)
            return
        leader = res.range_kvs(0)
        if not leader or leader[0].create_revision != self.lead.revision:
            raise LostOwnership("leadership lost: fenced tick write rejected")
        log.info("batched tick write rejected; writing its jobs one by one", jobs=len(chunk))
        await asyncio.gather(*(self._write_guarded(plan) for plan in chunk))

    def _schedule_at(self, jk: JobKey, when: datetime | None) -> None:
        entry = self.jobs.get(jk)
        if entry is None:
            return
        entry.generation += 1
        entry.next_due = when
        if when is not None:
            heapq.heappush(self._heap, (when, entry.generation, jk))

    async def _refresh_state(self, jk: JobKey) -> None:
        with contextlib.suppress(Unavailable):
            kv = await self.etcd.get(self.keys.schedule_state(*jk))
            entry = self.jobs.get(jk)
            if entry is not None:
                entry.state = json.loads(kv.value) if kv else {}
                entry.state_rev = kv.mod_revision if kv else 0

    # -- firing --------------------------------------------------------------------------------

    async def fire(self, jk: JobKey) -> None:
        """Plan one job at ``now`` and write the decision in one fenced transaction."""
        plan = self._plan(jk)
        if plan is not None and await self._write(
            jk, plan.entry, plan.state, plan.runs, plan.cancels
        ):
            self._schedule_at(jk, plan.next_due)

    def _plan(self, jk: JobKey) -> _Planned | None:
        """Decide one job's due ticks at ``now``; None when there is nothing to write."""
        entry = self.jobs.get(jk)
        if entry is None or not entry.job.enabled:
            return None
        job, now = entry.job, self.clock()
        # Ticks due by now are decided exactly as without planning ahead (catch-up, grace,
        # deadline); the ticks of the next `ahead` seconds are added as on-time ticks, to be
        # started at their instant (D120). Only jobs whose overlap decision cannot change
        # meanwhile (allow, no parallel limit) are planned early.
        ahead = self.ahead if job.overlap == "allow" and not job.max_parallel else 0.0
        horizon = now + timedelta(seconds=ahead)
        state = json.loads(json.dumps(entry.state)) if entry.state else {}
        sched_state: dict[str, Any] = state.setdefault("schedules", {})
        events: list[dict[str, Any]] = state.setdefault("events", [])
        fired_total = int(state.get("fired", 0))
        active = len(self.active.get(jk, ()))
        # A run is written twice (record + queue entry): keep a transaction well under etcd's
        # 1.5 MiB request limit whatever the job's size.
        per_txn = max(1, min(RUNS_PER_TXN, TXN_BYTES // (2 * len(job.model_dump_json()) + 512)))
        runs: list[tuple[Run, str]] = []  # (run, tick key)
        cancels: list[str] = []
        next_due: datetime | None = None
        changed = False
        truncated = False
        for spec, sched in entry.schedules:
            fp = spec.fingerprint()
            last = sched_state.get(fp, {}).get("last_tick")
            plan = plan_schedule(
                sched,
                last_tick=datetime.fromisoformat(last) if last else None,
                active_since=job.active_since,
                now=now,
                catchup=job.catchup,
                starting_deadline=job.starting_deadline,
                limit=job.catchup_limit,
            )
            fire = list(plan.fire)
            plan_next = plan.next_due
            if ahead:
                since = plan.last_tick or (datetime.fromisoformat(last) if last else None)
                since = max(since or job.active_since, job.active_since, now)
                coming = ticks_between(sched, since, horizon, RUNS_PER_TXN)
                fire += [(tick, "schedule") for tick in coming]
                plan_next = sched.next_after(coming[-1] if coming else since)
            for span, fate in ((plan.disabled, "disabled"), (plan.missed, "missed")):
                if span is not None:
                    events.append(_span(span, fate, fp))
                    metrics.TICKS.labels(fate).inc(span.count)
            new_last = plan.last_tick
            for tick, source in fire:
                if len(runs) >= per_txn:
                    truncated = True
                    break
                if job.max_runs and fired_total >= job.max_runs:
                    events.append(_span(TickSpan(tick, tick, 1), "max_runs", fp))
                    new_last = tick
                    continue
                action = overlap_action(job.overlap, active, job.max_parallel)
                tick_key = self.keys.tick(job.project, job.name, fp, int(tick.timestamp() * 1000))
                if action == "skip":
                    run = self.store.new_run(
                        job,
                        source=source,
                        parameters=spec.parameters,
                        scheduled_at=tick,
                        schedule=fp,
                        status="skipped",
                    )
                    run.error = f"skipped by overlap policy 'forbid': {active} run(s) still active"
                else:
                    if action == "replace":
                        cancels.extend(r for r in self.active.get(jk, ()) if r not in cancels)
                    run = self.store.new_run(
                        job,
                        source=source,
                        parameters=spec.parameters,
                        scheduled_at=tick,
                        schedule=fp,
                    )
                    if tick > now:
                        run.not_before = tick  # the worker claims it now and starts it then
                    active += 1
                    fired_total += 1
                runs.append((run, tick_key))
                new_last = tick
            if truncated:
                # The rest of this schedule's due ticks go in the next transaction, at once.
                next_due = now
            elif plan_next is not None:
                wake = plan_next - timedelta(seconds=ahead)
                next_due = wake if next_due is None else min(next_due, wake)
            if new_last is not None and (last is None or new_last.isoformat() != last):
                sched_state[fp] = {"last_tick": new_last.isoformat()}
                changed = True
            if truncated:
                break
        if not changed and not runs:
            self._schedule_at(jk, next_due)
            return None
        # Forget state of schedules that no longer exist.
        live = {spec.fingerprint() for spec, _ in entry.schedules}
        for fp in list(sched_state):
            if fp not in live:
                del sched_state[fp]
        state["events"] = events[-EVENTS_KEPT:]
        state["fired"] = fired_total
        return _Planned(jk, entry, state, runs, cancels, next_due)

    async def _write(
        self,
        jk: JobKey,
        entry: JobEntry,
        state: dict[str, Any],
        runs: list[tuple[Run, str]],
        cancels: list[str],
    ) -> bool:
        """One fenced transaction; False when the state moved (re-planned at once)."""
        state_key = self.keys.schedule_state(*jk)
        compares, ops = self._write_ops(entry, state_key, state, runs)
        compares.insert(0, self.lead.fence())
        for run_id in cancels[: max(0, MAX_TXN_OPS - len(ops))]:
            ops.append(
                Op.put(
                    self.keys.control(run_id),
                    dumps({"action": "cancel", "at": self.clock(), "reason": "replaced"}),
                )
            )
        tick_keys = [tick_key for _, tick_key in runs]
        probes = [Op.get(self.lead.key), Op.get(state_key)]
        probes += [Op.get(k, keys_only=True) for k in tick_keys]
        res = await self.etcd.txn(compares, ops, probes)
        if not res.succeeded:
            leader = res.range_kvs(0)
            if not leader or leader[0].create_revision != self.lead.revision:
                raise LostOwnership("leadership lost: fenced tick write rejected")
            current = res.range_kvs(1)
            current_rev = current[0].mod_revision if current else 0
            taken = {k for i, k in enumerate(tick_keys) if res.range_kvs(2 + i)}
            if current_rev == entry.state_rev and taken:
                # Those ticks already have a run (a backfill made it): they are handled. Write
                # the state and the other runs without them.
                log.info("ticks already handled elsewhere", job="/".join(jk), ticks=len(taken))
                kept = [(r, k) for r, k in runs if k not in taken]
                return await self._write(jk, entry, state, kept, cancels)
            entry.state = json.loads(current[0].value) if current else {}
            entry.state_rev = current_rev
            log.info("schedule state moved under us; planning again", job="/".join(jk))
            self._schedule_at(jk, self.clock() + timedelta(seconds=0.05))
            return False
        self._committed(jk, entry, state, runs, res.revision)
        return True

    def _write_ops(
        self, entry: JobEntry, state_key: str, state: dict[str, Any], runs: list[tuple[Run, str]]
    ) -> tuple[list[Any], list[Any]]:
        """Compares (state CAS, absent tick and run keys; no fence) and ops of one job's plan."""
        compares: list[Any] = [Compare.modified(state_key, entry.state_rev)]
        ops: list[Any] = [Op.put(state_key, dumps(state))]
        for run, tick_key in runs:
            compares.append(Compare.absent(tick_key))
            compares.append(Compare.absent(self.keys.run(run.project, run.id)))
            fate = "skipped" if run.status == "skipped" else run.source
            ops += self.store.create_run_ops(run)
            ops.append(
                Op.put(
                    tick_key,
                    tick_record(
                        run.scheduled_at or run.created_at, run.schedule or "", fate, run.id
                    ),
                )
            )
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
            metrics.TICKS.labels("skipped" if run.status == "skipped" else "fired").inc()
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

    # -- lost runs -----------------------------------------------------------------------------

    def _on_claim_event(self, ev: Any) -> None:
        if ev.kind != "delete":
            return
        run_id = ev.kv.key.rsplit("/", 1)[-1]
        if run_id in self.active_job and run_id not in self._lost_checks:
            # A finished run's completion deletes its claim and its active key in one write, but
            # the two arrive on separate watches: look a moment later, and read the run back only
            # if it is still active once the active keys' watch has passed the claim's deletion
            # (a retry queued, or a worker gone). Reading every one back was a sixteenth of the
            # leader's CPU per run and an etcd range per run (D136).
            self._lost_checks.add(run_id)
            self._later(run_id, ev.kv.mod_revision, LOST_CHECK_DELAY)

    def _later(self, run_id: str, gone_at: int, waited: float) -> None:
        asyncio.get_running_loop().call_later(
            LOST_CHECK_DELAY, self._after_claim_gone, run_id, gone_at, waited
        )

    def _after_claim_gone(self, run_id: str, gone_at: int, waited: float) -> None:
        jk = self.active_job.get(run_id)
        if jk is None:
            self._lost_checks.discard(run_id)  # finished: its active key went with the claim
            return
        if self._actives_rev < gone_at and waited < LOST_CHECK_MAX:
            self._later(run_id, gone_at, waited + LOST_CHECK_DELAY)  # that watch is behind
            return
        task = asyncio.get_running_loop().create_task(self._check_lost_task(run_id, jk[0]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check_lost_task(self, run_id: str, project: str) -> None:
        try:
            await self.check_lost(run_id, project)
        except (Unavailable, OutcomeUnknown) as exc:
            if isinstance(exc, OutcomeUnknown):
                metrics.OUTCOME_UNKNOWN.labels("lost_run").inc()
            log.warning("lost-run check failed; reconcile will retry", run=run_id, error=str(exc))
        finally:
            self._lost_checks.discard(run_id)

    async def check_lost(self, run_id: str, project: str) -> None:
        try:
            stored = await self.store.get_run_kv(project, run_id)
        except LookupError:
            return
        run = stored.run
        jk = (project, run.job)
        if run.status != "running":
            return
        claim = self.keys.claim(run_id)
        if await self.etcd.get(claim) is not None:
            return
        # A running record was last written by its claim: that write's revision is the
        # attempt's fencing token, which the lost attempt records like a finished one. (The
        # record's own ``claim_revision`` is the previous attempt's on a retry: not this one.)
        earlier = {a.claim_revision for a in run.attempts}
        token = run.claim_revision if run.claim_revision not in earlier else None
        updated, ops = self.store.finish_ops(
            run,
            status="lost",
            error=f"node {run.node} stopped holding the run (lease expired)",
            claim_revision=token or stored.mod_revision,
        )
        res = await self.etcd.txn(
            [
                self.lead.fence(),
                Compare.absent(claim),
                Compare.modified(self.keys.run(jk[0], run_id), stored.mod_revision),
            ],
            ops,
        )
        if res.succeeded:
            metrics.run_finished("lost", project, run.job)
            log.warning(
                "run lost",
                job="/".join(jk),
                run=run_id,
                node=run.node,
                attempt=run.attempt,
                retry=updated.status == "pending",
            )

    async def reconcile(self) -> None:
        """Find active runs that are neither queued nor claimed (their worker died)."""
        actives = await self.etcd.range_all(self.keys.actives(), keys_only=True)
        rev = actives.revision
        queued = await self.etcd.range_all(self.keys.queue(), keys_only=True, revision=rev)
        claimed = await self.etcd.range_all(self.keys.claims(), keys_only=True, revision=rev)
        held = {kv.key.rsplit("/", 1)[-1] for kv in queued.kvs + claimed.kvs}
        for kv in actives.kvs:
            # The watch owns the in-memory active set; this only looks for orphans.
            project, _, run_id = self.keys.tail(kv.key, self.keys.actives())[:3]
            if run_id not in held and run_id not in self._lost_checks:
                self._lost_checks.add(run_id)
                await self._check_lost_task(run_id, project)

    # -- retention -----------------------------------------------------------------------------

    async def _archive(self, jk: JobKey, run_ids: list[str]) -> bool:
        """Copy the records to the log store (``archive``); False when that failed."""
        assert self.archive is not None
        records: dict[str, bytes] = {}
        for run_id in run_ids:
            kv = await self.etcd.get(self.keys.run(jk[0], run_id))
            if kv is not None:
                records[run_id] = kv.value
        if not records:
            return True
        try:
            await self.archive(jk[0], jk[1], records)
        except Exception as exc:
            log.warning(
                "archiving runs failed; pruning later", job=f"{jk[0]}/{jk[1]}", error=str(exc)
            )
            return False
        return True

    async def prune(self) -> None:
        """Delete finished runs beyond each job's ``keep_runs`` (oldest first) and old ticks."""
        index = await self.etcd.range_all(self.keys.job_runs(), keys_only=True)
        by_job: dict[JobKey, list[str]] = defaultdict(list)
        for kv in index.kvs:
            project, job, run_id = self.keys.tail(kv.key, self.keys.job_runs())[:3]
            by_job[(project, job)].append(run_id)
        doomed: list[Any] = []
        for jk, ids in by_job.items():
            if is_task_job(jk[1]):
                continue  # workflow task runs go with their execution (WorkflowEngine.prune)
            entry = self.jobs.get(jk)
            # a deleted job's runs are history too: kept by the deleted-job limits (D181)
            keep = entry.job.keep_runs if entry else DELETED_JOB_KEEP_RUNS
            excess = expired_runs(
                ids,
                keep=keep,
                keep_days=entry.job.keep_days if entry else DELETED_JOB_KEEP_DAYS,
                now=self.clock(),
                active=self.active.get(jk, set()),
            )
            if excess and self.archive is not None and not await self._archive(jk, excess):
                continue  # records stay in etcd until they are archived
            for run_id in excess:
                doomed.append(Op.delete(self.keys.run(jk[0], run_id)))
                doomed.append(Op.delete(self.keys.job_run(jk[0], jk[1], run_id)))
            if entry is not None:
                ticks = await self.etcd.range(
                    self.keys.ticks(*jk), keys_only=True, descending=True, limit=keep * 2 + 1
                )
                if len(ticks.kvs) > keep * 2:
                    # Keys sort by tick time: delete everything older than the oldest kept.
                    oldest_kept = ticks.kvs[keep * 2 - 1].key
                    doomed.append(Op.delete_range(self.keys.ticks(*jk), oldest_kept))
        for i in range(0, len(doomed), MAX_TXN_OPS):
            await self.etcd.txn([self.lead.fence()], doomed[i : i + MAX_TXN_OPS])
        if doomed:
            log.info("pruned finished runs", ops=len(doomed))
