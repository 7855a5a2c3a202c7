"""The leader's dependency waiter: releases or ends every slot waiting on its upstreams (D294).

A slot of a schedule with ``depends_on`` (or a ``not_before`` gate) is written as a
``waiting/<project>/<job>/<slot name>`` key in the transaction that handles its tick (the
scheduler holds its run back: ``cluster.depends_plan``). This waiter keeps the waiting keys in one
:class:`DueQueue`; nothing polls. A waiter is looked at when

- an upstream moves: a tick record of an upstream job or workflow is written (a slot fired, was
  skipped, settled or rerun), a run of an upstream job changes status (its run index), or an
  execution of an upstream workflow is written;
- its time gate, its deadline or its ``max_wait`` falls due.

A look reads the upstreams' tick records in each window and the statuses of their runs and
decides with the pure ``cluster.depends.decide``. Releasing is one transaction, fenced on
leadership, comparing the waiting key's mod revision: it deletes the waiting key, creates the
minted run (its id was fixed when the tick fired) and rewrites the tick record (with the open-slot
key when the schedule has deadlines, which the slot watcher then settles). Ending is the same
compare: the tick record settled ``deadline_missed`` or ``skipped_dependency`` (with the alarm
and the notification outbox entry, as the slot watcher writes them). So a slot is released or
ended once, whoever leads: a new leader reads the waiting keys at the revision it starts from
and looks at each at once.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from cluster import depends_plan, outcomes
from cluster.depends import SKIPPED_DEPENDENCY, Waiting, decide, gate_of
from cluster.depends_plan import hold_runs
from cluster.depends_spec import MAX_WAIT_DEFAULT
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
from cluster.etcd import Compare, Etcd, Event, Op, OutcomeUnknown
from cluster.keys import Keys
from cluster.models import Job, Run
from cluster.outcomes import slot_deadlines
from cluster.slotlog import workflow_tick_ops
from cluster.store import Store
from cluster.tickplan import JobPlan
from cluster.watch import follow
from cluster.workflow_store import create_execution_ops, new_execution
from cluster.workflows import Execution, Workflow
from nodes import metrics
from nodes.leader.loops import RETRY, DueQueue, retry_later
from nodes.leader.slotdoc import slot_doc

if TYPE_CHECKING:
    from cluster.election import Leadership

log = structlog.get_logger(__name__)

JobKey = tuple[str, str]
PARALLEL = 8
# Looks caused by upstream events, all waiters together (D331): a waiter looks again at most
# every max(1 s, waiters / LOOKS_PER_SECOND) however busy its upstreams are.
LOOKS_PER_SECOND = 50.0
MIN_PACE = timedelta(seconds=1)


class DependencyWaiter:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        store: Store,
        leadership: Leadership,
        *,
        clock: Callable[[], datetime],
        job_of: Callable[[JobKey], Job | None],
        max_wait: float = MAX_WAIT_DEFAULT,
        outbox: Callable[[], None] = lambda: None,
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.store = store
        self.lead = leadership
        self.clock = clock
        self.job_of = job_of
        self.max_wait = max_wait
        self.outbox = outbox  # the slot watcher sends what an end put into the outbox
        self.waiting: dict[str, Waiting] = {}
        self.by_upstream: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.per_job: Counter[JobKey] = Counter()
        self.per_project: Counter[str] = Counter()
        self.wf_projects: Counter[str] = Counter()  # waiters on a workflow, by project
        self.ups: dict[str, list[tuple[str, str, str]]] = {}  # a waiter's upstreams
        self.due: DueQueue[str] = DueQueue(clock)
        self._dirty: set[str] = set()
        self.looked: dict[str, datetime] = {}  # when each waiter's last look began
        self._sem = asyncio.Semaphore(PARALLEL)
        self.released = 0
        self.ended = 0
        # the others that read the run index from this waiter's stream (the workflow engine, D421)
        self._run_readers: list[tuple[Callable[[Event], None], Callable[[], Awaitable[None]]]] = []

    def share_runs(
        self, on_put: Callable[[Event], None], on_gap: Callable[[], Awaitable[None]]
    ) -> Callable[[], None]:
        """``on_put`` gets every run index put this stream delivers from now (join BEFORE the
        read it follows on from); ``on_gap()`` after a compaction; answers a leave (D421)."""
        reader = (on_put, on_gap)
        self._run_readers.append(reader)
        return lambda: self._run_readers.remove(reader) if reader in self._run_readers else None

    # -- the scheduler's part ------------------------------------------------------------------

    def hold(self, job: Job, plan: JobPlan, state: dict[str, Any]) -> None:
        """Hold the plan's runs of waiting schedules back (``cluster.depends_plan``)."""
        hold_runs(
            job,
            plan,
            state,
            self.keys,
            job_waiting=self.per_job[(job.project, job.name)],
            project_waiting=self.per_project[job.project],
            per_job=depends_plan.MAX_WAITING_PER_JOB,
            per_project=depends_plan.MAX_WAITING_PER_PROJECT,
        )

    # -- the picture ---------------------------------------------------------------------------

    def _upstreams(self, w: Waiting) -> list[tuple[str, str, str]]:
        """The upstreams whose events kick the waiter: its schedule's as the job is now (an edit
        of ``depends_on`` keeps the fingerprint, D291), else as they were when it fired."""
        job = self.job_of((w.project, w.job))
        spec = spec_of(job, w.schedule) if job is not None else None
        if spec is not None:
            return [(w.project, *d.upstream) for d in spec.depends_on]
        return [(w.project, *u) for u in w.upstreams]

    def _on_waiting(self, key: str, value: bytes | None, rev: int) -> None:
        old = self.waiting.pop(key, None)
        if old is not None:
            for up in self.ups.pop(key, []):
                self.by_upstream[up].discard(key)
                if not self.by_upstream[up]:
                    del self.by_upstream[up]
                self.wf_projects[old.project] -= up[1] == "workflow"
            self.per_job[(old.project, old.job)] -= 1
            self.per_project[old.project] -= 1
            metrics.WAITING_SLOTS.labels(old.project).set(self.per_project[old.project])
        if value is None:
            self.due.set(key, None, wake=False)
            self.looked.pop(key, None)
            self._dirty.discard(key)
            return
        project, job, name = self.keys.tail(key, self.keys.waitings())[:3]
        try:
            w = Waiting.parse(key, project, job, name, value, rev)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("cannot read waiting slot; ignoring it", slot=key, error=str(exc))
            return
        self.waiting[key] = w
        self.ups[key] = self._upstreams(w)
        for up in self.ups[key]:
            self.by_upstream[up].add(key)
            self.wf_projects[project] += up[1] == "workflow"
        self.per_job[(project, job)] += 1
        self.per_project[project] += 1
        metrics.WAITING_SLOTS.labels(project).set(self.per_project[project])
        self._kick(key)

    def _kick(self, key: str) -> None:
        self._dirty.add(key)
        self.due.set(key, self.clock())

    def pace(self) -> timedelta:
        return max(MIN_PACE, timedelta(seconds=len(self.waiting) / LOOKS_PER_SECOND))

    def _paced(self, key: str) -> datetime:
        """When an upstream event may make ``key`` look again: not before its last look plus
        the pace (a busy upstream's events coalesce into one look per pace, D331)."""
        now, last = self.clock(), self.looked.get(key)
        return now if last is None else max(now, last + self.pace())

    def _kick_upstream(self, project: str, kind: str, name: str) -> None:
        for key in self.by_upstream.get((project, kind, name), ()):
            self._dirty.add(key)
            when, due = self._paced(key), self.due.at(key)
            if due is None or due > when:  # a gate or deadline due sooner stays as it is
                self.due.set(key, when)

    def on_job(self, jk: JobKey) -> None:
        """A job changed: its waiting slots look again (its schedules or upstreams may have)."""
        if not self.per_job[jk]:
            return  # none waits: every job write of the cluster would otherwise scan them all
        for key, w in list(self.waiting.items()):
            if (w.project, w.job) == jk:
                self._on_waiting(key, w.value().encode(), w.rev)

    def _on_job_key(self, key: str) -> None:
        # its own waiters are re-read by ``on_job``, which the scheduler calls once its cache has
        # the new version (``SlotWatcher.on_job``): this watch may come first
        project, job = self.keys.tail(key, self.keys.jobs())[:2]
        self._kick_upstream(project, "job", job)  # enabled again, or its schedules changed

    def _on_workflow(self, key: str, value: bytes | None) -> None:
        """A workflow changed: its waiters look again with its upstreams as it has them now
        (D331), and the waiters on it look (enabled again, schedules changed)."""
        project, name = self.keys.tail(key, self.keys.workflows())[:2]
        self._kick_upstream(project, "workflow", name)
        jk = (project, f"@{name}")
        if value is None or not self.per_job[jk]:
            return  # deleted: its waiting keys went with it (D330)
        try:
            wf = Workflow.model_validate_json(value)
        except ValueError:
            return
        for wkey, w in list(self.waiting.items()):
            if (w.project, w.job) == jk:
                spec = spec_of(wf, w.schedule)
                if spec is not None:
                    w.upstreams = [d.upstream for d in spec.depends_on]
                self._on_waiting(wkey, w.value().encode(), w.rev)

    def _on_tick(self, key: str) -> None:
        project, job = self.keys.tail(key, self.keys.prefix + "/ticks/")[:2]
        self._kick_upstream(project, "job", job)

    def _on_wf_tick(self, key: str) -> None:
        project, wf = self.keys.tail(key, self.keys.prefix + "/workflow-ticks/")[:2]
        self._kick_upstream(project, "workflow", wf)

    def _on_job_run(self, ev: Event) -> None:
        project, job = self.keys.tail(ev.kv.key, self.keys.job_runs())[:2]
        self._kick_upstream(project, "job", job)
        for on_put, _ in list(self._run_readers):
            on_put(ev)

    async def _runs_compacted(self, exc: Any) -> int:
        for _, on_gap in list(self._run_readers):  # they look again for what they missed
            await on_gap()
        return await self._skip_compacted(exc)

    def _on_execution(self, key: str, value: bytes | None) -> None:
        project = self.keys.tail(key, self.keys.executions())[0]
        if value is None or not self.wf_projects[project]:
            return
        try:
            wf = json.loads(value).get("workflow")
        except ValueError:
            return
        if isinstance(wf, str):
            self._kick_upstream(project, "workflow", wf)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, rev: int) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.count(rev))
            for prefix, on in (
                (self.keys.jobs(), self._on_job_key),
                (self.keys.prefix + "/ticks/", self._on_tick),
                (self.keys.prefix + "/workflow-ticks/", self._on_wf_tick),
            ):
                tg.create_task(self._follow_keys(prefix, rev, on))
            tg.create_task(  # one stream of the run index for this waiter and the engine (D421)
                follow(
                    self.etcd,
                    self.keys.job_runs(),
                    rev,
                    lambda ev: self._on_job_run(ev) if ev.kind == "put" else None,
                    on_compacted=self._runs_compacted,
                    skip="delete",
                )
            )
            tg.create_task(
                follow(
                    self.etcd,
                    self.keys.workflows(),
                    rev,
                    lambda ev: self._on_workflow(
                        ev.kv.key, ev.kv.value if ev.kind == "put" else None
                    ),
                    on_compacted=self._skip_compacted,
                )
            )
            tg.create_task(
                follow(
                    self.etcd,
                    self.keys.executions(),
                    rev,
                    lambda ev: self._on_execution(
                        ev.kv.key, ev.kv.value if ev.kind == "put" else None
                    ),
                    on_compacted=self._skip_compacted,
                )
            )
            while True:
                due = self.due.pop_due()
                if due:
                    await asyncio.gather(*(self._guarded(key) for key in due))
                    continue
                await self.due.wait()

    async def count(self, rev: int) -> None:
        """Follow the waiting slots; alone, it keeps only the counts of ``hold``'s quota: what
        a leader of a shard other than 0 runs (shard 0's leader looks after its slots, D302)."""
        res = await self.etcd.range_all(self.keys.waitings(), revision=rev)
        for kv in res.kvs:
            self._on_waiting(kv.key, kv.value, kv.mod_revision)
        await follow(
            self.etcd,
            self.keys.waitings(),
            rev,
            lambda ev: self._on_waiting(
                ev.kv.key, ev.kv.value if ev.kind == "put" else None, ev.kv.mod_revision
            ),
            lambda: set(self.waiting),
        )

    async def _skip_compacted(self, exc: Any) -> int:
        """A missed upstream event is not replayed: every waiter looks again, then on from now."""
        for key in self.waiting:
            self._kick(key)
        return int(exc.revision)

    async def _follow_keys(self, prefix: str, rev: int, on: Callable[[str], None]) -> None:
        # a deletion (retention's of run index keys and ticks) wakes nobody: etcd leaves it out
        await follow(
            self.etcd,
            prefix,
            rev,
            lambda ev: on(ev.kv.key) if ev.kind == "put" else None,
            on_compacted=self._skip_compacted,
            skip="delete",
        )

    async def _guarded(self, key: str) -> None:
        async with self._sem:
            self._dirty.discard(key)
            if key in self.waiting:
                self.looked[key] = self.clock()
            await retry_later(self.due, key, lambda: self._look(key), "waiting slot not looked at")

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
