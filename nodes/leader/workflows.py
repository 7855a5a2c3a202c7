"""The leader's workflow engine: advances DAG executions, admits queued ones (flow control),
fires workflow schedules and prunes finished executions.

It reacts to two watches instead of polling:

- ``job-runs/…/@<workflow>:<task>/<run>`` (the per-job run index, written once with the final
  status when a run finishes): the execution of that run is advanced at once;
- ``executions/…``: a new, rerun, cancelled or reported execution is advanced at once.

Advancing is ``cluster.dag.advance`` (pure) on the execution read from the watch cache, written
in ONE transaction that compares the leader's fencing key and the execution's mod revision and
creates the runs of the tasks that became ready. A write that fails re-reads and decides again, so
a task's run is created at most once (its id is in the execution record in the same transaction)
and none is forgotten: a new leader loads every unfinished execution and folds in the runs that
finished while nobody led.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from cluster.dag import Graph
from cluster.election import Leadership
from cluster.errors import LostOwnership, Unavailable
from cluster.etcd import Compacted, Compare, Etcd, Op, OutcomeUnknown
from cluster.execplan import admitted, fold_finished, step
from cluster.keys import Keys
from cluster.models import FINISHED, Run
from cluster.store import Store
from cluster.watch import follow, follow_puts
from cluster.workflow_store import task_run
from cluster.workflows import (
    Execution,
    Workflow,
    execution_json,
    is_task_job,
    task_job_name,
)
from nodes import metrics
from nodes.leader.loops import DueQueue, periodic
from nodes.leader.retention import ExecutionRetention
from nodes.leader.rulecache import RuleCache
from nodes.leader.wftick import WorkflowTicks

log = structlog.get_logger(__name__)

RECONCILE_EVERY = 10.0
PRUNE_EVERY = 60.0
ExecKey = tuple[str, str]  # (project, execution id)
WfKey = tuple[str, str]  # (project, workflow)


class WorkflowEngine:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        store: Store,
        leadership: Leadership,
        *,
        clock: Callable[[], datetime],
        rules: RuleCache,
    ) -> None:
        self.etcd = etcd
        self.ticks = WorkflowTicks(etcd, keys, store, leadership, clock=clock, rules=rules)
        self.keys = keys
        self.store = store
        self.lead = leadership
        self.clock = clock
        self.retention = ExecutionRetention(
            etcd, keys, store, leadership, workflow_of=lambda wk: self.workflows.get(wk)
        )
        self.execs: dict[ExecKey, tuple[Execution, int]] = {}  # unfinished executions
        self.run_exec: dict[str, ExecKey] = {}
        self.done_runs: set[str] = set()  # task runs that finished, not yet folded in
        self.workflows: dict[WfKey, Workflow] = {}
        self.reserved: dict[WfKey, set[str]] = defaultdict(set)  # admitted, write in flight
        self._written: dict[ExecKey, int] = {}
        self._writing: dict[ExecKey, tuple[bytes, Execution]] = {}  # in flight: its event (D454)
        self._graphs: dict[str, Graph] = {}  # per execution: its snapshot never changes
        self._upstream_end: dict[str, datetime | None] = {}  # decided, not yet written
        self._busy: set[ExecKey] = set()
        self._dirty: set[ExecKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None
        self.due: DueQueue[WfKey] = DueQueue(clock)
        self._failed = asyncio.Event()
        # the run index from another stream (the dependency waiter's, D421): called with this
        # engine's put handler and gap handler, answers how to leave; None: a watch of its own
        self.runs_from: Callable[..., Callable[[], None]] | None = None
        self._runs_shared = False

    # -- state ---------------------------------------------------------------------------------

    async def _load(self) -> int:
        res = await self.etcd.range_all(self.keys.executions())
        wfs = await self.etcd.range_all(self.keys.workflows(), revision=res.revision)
        for kv in wfs.kvs:
            self._on_workflow(kv.key, kv.value)
        for kv in res.kvs:
            self._cache(kv.key, kv.value, kv.mod_revision)
        await self._find_done_runs(list(self.execs))
        return res.revision

    async def _find_done_runs(self, eks: list[ExecKey]) -> None:
        """Read the final status of every started task run (a cheap index read) so runs that
        finished while no leader watched are folded in."""
        index: list[str] = []
        for ek in eks:
            cached = self.execs.get(ek)
            if cached is None:
                continue
            ex = cached[0]
            for name, t in ex.tasks.items():
                if t.status == "started" and t.run_id:
                    job = task_job_name(ex.workflow, name)
                    index.append(self.keys.job_run(ex.project, job, t.run_id))
        for kv in await self.store.get_many(index):
            if kv.value.decode() in FINISHED:
                self.done_runs.add(kv.key.rsplit("/", 1)[-1])

    def _cache(self, key: str, value: bytes | None, rev: int) -> ExecKey | None:
        project, exec_id = self.keys.tail(key, self.keys.executions())[:2]
        ek = (project, exec_id)
        if value is None:
            self.execs.pop(ek, None)
            return ek
        writing = self._writing.get(ek)
        if writing is not None and writing[0] == value:
            ex = writing[1]  # our write's event before its reply: the object written (D454)
        else:
            try:
                ex = Execution.model_validate_json(value)
            except ValueError as exc:
                log.error("cannot read execution; ignoring it", key=key, error=str(exc))
                return None
        old = self.execs.get(ek)
        if old is not None and old[1] > rev:
            return ek
        if ex.finished:
            self.execs.pop(ek, None)
            self._graphs.pop(ex.id, None)
            return ek
        self.execs[ek] = (ex, rev)
        for t in ex.tasks.values():
            if t.run_id and t.status == "started":
                self.run_exec[t.run_id] = ek
        return ek

    def _on_exec_event(self, ev: Any) -> None:
        project, exec_id = self.keys.tail(ev.kv.key, self.keys.executions())[:2]
        if ev.kind == "put" and self._written.get((project, exec_id)) == ev.kv.mod_revision:
            return  # our own write: cached already, and advanced as far as it goes
        ek = self._cache(ev.kv.key, ev.kv.value if ev.kind == "put" else None, ev.kv.mod_revision)
        if ek is None:
            return
        cached = self.execs.get(ek)
        if cached is None:  # finished or deleted: a slot of its workflow may be free
            self._forget_runs(ek)
            self._kick_queued()
            return
        self.kick(ek)

    def _forget_runs(self, ek: ExecKey) -> None:
        for run_id in [r for r, e in self.run_exec.items() if e == ek]:
            self.run_exec.pop(run_id, None)
            self.done_runs.discard(run_id)

    def _on_run_event(self, ev: Any) -> None:
        if ev.kind != "put":
            return
        _, job, run_id = self.keys.tail(ev.kv.key, self.keys.job_runs())[:3]
        if not is_task_job(job) or ev.kv.value.decode() not in FINISHED:
            return
        self.done_runs.add(run_id)
        ek = self.run_exec.get(run_id)
        if ek is not None:
            self.kick(ek)

    def _on_workflow(self, key: str, value: bytes | None) -> None:
        project, name = self.keys.tail(key, self.keys.workflows())[:2]
        wk = (project, name)
        if value is None:
            self.workflows.pop(wk, None)
        else:
            try:
                self.workflows[wk] = Workflow.model_validate_json(value)
            except ValueError as exc:
                log.error("cannot read workflow; ignoring it", key=key, error=str(exc))
                self.workflows.pop(wk, None)
        self._due_at(wk, self.clock())

    # -- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        leave = self.runs_from(self._on_run_event, self.reconcile) if self.runs_from else None
        self._runs_shared = leave is not None  # joined before the read below (D421)
        try:
            await self._run()
        finally:
            if leave is not None:
                leave()

    async def _run(self) -> None:
        rev = await self._load()
        log.info(
            "workflow engine leading", executions=len(self.execs), workflows=len(self.workflows)
        )
        for ek in list(self.execs):
            self.kick(ek)
        try:
            await self._lead(rev)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _lead(self, rev: int) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                follow(
                    self.etcd,
                    self.keys.executions(),
                    rev,
                    self._on_exec_event,
                    lambda: {self.keys.execution(*ek) for ek in self.execs},
                )
            )
            if not self._runs_shared:  # finished runs only: a deleted run changes nothing here
                tg.create_task(
                    follow_puts(self.etcd, self.keys.job_runs(), rev, self._on_run_event)
                )
            tg.create_task(
                follow(
                    self.etcd,
                    self.keys.workflows(),
                    rev,
                    lambda ev: self._on_workflow(
                        ev.kv.key, ev.kv.value if ev.kind == "put" else None
                    ),
                    lambda: {self.keys.workflow(*wk) for wk in self.workflows},
                )
            )
            tg.create_task(periodic(RECONCILE_EVERY, self.reconcile))
            tg.create_task(periodic(PRUNE_EVERY, self.retention.prune))
            tg.create_task(self._schedule_loop())
            tg.create_task(self._fail_on_lost_ownership())

    async def _fail_on_lost_ownership(self) -> None:
        await self._failed.wait()
        assert self._error is not None
        raise self._error

    async def reconcile(self) -> None:
        """Safety net behind the watches: fold in finished runs and retry stuck executions."""
        self.done_runs &= set(self.run_exec)  # forget runs of executions no longer followed
        await self._find_done_runs(list(self.execs))
        for ek in list(self.execs):
            self.kick(ek)

    def kick(self, ek: ExecKey) -> None:
        if ek in self._busy:
            self._dirty.add(ek)
            return
        self._busy.add(ek)
        task = asyncio.get_running_loop().create_task(self._process_loop(ek))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _kick_queued(self) -> None:
        for ek, (ex, _) in list(self.execs.items()):
            if ex.status == "queued":
                self.kick(ek)

    async def _process_loop(self, ek: ExecKey) -> None:
        try:
            while True:
                self._dirty.discard(ek)
                try:
                    more = await self.process(ek)
                except LostOwnership as exc:
                    self._error = exc
                    self._failed.set()
                    return
                except (Unavailable, OutcomeUnknown, Compacted) as exc:
                    if isinstance(exc, OutcomeUnknown):
                        metrics.OUTCOME_UNKNOWN.labels("workflow").inc()
                    log.warning(
                        "execution write failed; will retry", execution=ek[1], error=str(exc)
                    )
                    await asyncio.sleep(0.5)
                    more = True
                except Exception:
                    log.exception("cannot advance execution; retrying in 30 s", execution=ek[1])
                    await asyncio.sleep(30)
                    more = True
                if not more and ek not in self._dirty:
                    return
        finally:
            self._busy.discard(ek)

    # -- advancing -----------------------------------------------------------------------------

    async def process(self, ek: ExecKey) -> bool:
        """Advance one execution by one fenced write; True when there is more to do at once."""
        for _ in range(20):
            cached = self.execs.get(ek)
            if cached is None:
                return False
            ex, rev = cached
            decided = await self._decide(ex)
            if decided is None:
                return False
            updated, runs, more = decided
            ok = await self._write(ek, rev, updated, runs)
            if ok:
                return more
            await self._reread(ek)
        return True

    async def _reread(self, ek: ExecKey) -> None:
        kv = await self.etcd.get(self.keys.execution(*ek))
        if kv is None:
            self.execs.pop(ek, None)
        else:
            self._cache(kv.key, kv.value, kv.mod_revision)

    async def _decide(self, ex: Execution) -> tuple[Execution, list[Run], bool] | None:
        """The next step of ``ex`` (``cluster.execplan``); None when nothing changes."""
        original = ex
        # The snapshot never changes: share it; copy only the per-task states (cheap for 500).
        ex = ex.model_copy(update={"tasks": {n: t.model_copy() for n, t in ex.tasks.items()}})
        now = self.clock()
        wk = (ex.project, ex.workflow)
        if ex.status == "queued" and not ex.cancel_requested:
            others = (e for e, _ in self.execs.values())
            if not admitted(ex, others, self.reserved[wk]):
                return None
            ex.status = "running"
            ex.started_at = ex.started_at or now
        upstream_end = await self._fold_runs(ex)
        graph = self._graphs.get(ex.id)
        if graph is None:
            graph = self._graphs[ex.id] = ex.snapshot.graph()
        runs, more = step(
            ex,
            graph,
            now=now,
            new_run=lambda name: task_run(self.store, ex, name, graph),
            base_size=len(execution_json(original)),
        )
        if ex == original:
            return None
        self._upstream_end[ex.id] = upstream_end
        return ex, runs, more

    async def _fold_runs(self, ex: Execution) -> datetime | None:
        """Read the records of the task runs that finished and fold them into ``ex``; answers
        when the newest of them finished."""
        done = {
            n: t.run_id
            for n, t in ex.tasks.items()
            if t.status == "started" and t.run_id and t.run_id in self.done_runs
        }
        if not done:
            return None
        kvs = await self.store.get_many([self.keys.run(ex.project, r) for r in done.values() if r])
        runs = {r.id: r for r in (Run.model_validate_json(kv.value) for kv in kvs)}
        return fold_finished(ex, done, runs)

    async def _write(self, ek: ExecKey, rev: int, ex: Execution, runs: list[Run]) -> bool:
        key = self.keys.execution(*ek)
        wk = (ex.project, ex.workflow)
        doc = execution_json(ex).encode()
        ops: list[Any] = [Op.put(key, doc)]
        was_queued = self.execs.get(ek, (ex, 0))[0].status == "queued"
        for run in runs:
            ops += self.store.create_run_ops(run)
        compares = [self.lead.fence(), Compare.modified(key, rev)]
        admitted = ex.status != "queued" and was_queued
        if admitted:
            self.reserved[wk].add(ex.id)
        self._writing[ek] = (doc, ex)
        try:
            res = await self.etcd.txn(compares, ops, [self.lead.probe()])
        finally:
            self.reserved[wk].discard(ex.id)
            self._writing.pop(ek, None)
        if not res.succeeded:
            self.lead.check_fenced(res, "fenced execution write rejected")
            return False
        self._written[ek] = res.revision
        for run in runs:
            self.run_exec[run.id] = ek
            if run.id in self.done_runs:  # finished before we saw our own reply
                self._dirty.add(ek)
        for t in ex.tasks.values():
            if t.run_id and t.status != "started":
                self.done_runs.discard(t.run_id)
        if ex.finished:
            self.execs.pop(ek, None)
            self._graphs.pop(ex.id, None)
        else:
            self.execs[ek] = (ex, res.revision)
        upstream_end = self._upstream_end.pop(ex.id, None)
        if runs:
            metrics.WORKFLOW_TASKS_STARTED.inc(len(runs))
            if upstream_end is not None:
                metrics.DAG_ADVANCE_LAG.observe(
                    max(0.0, (self.clock() - upstream_end).total_seconds())
                )
            log.info("tasks started", execution=ex.id, workflow=ex.workflow, runs=len(runs))
        if ex.finished:
            self._forget_runs(ek)
            self._written.pop(ek, None)
            metrics.WORKFLOW_EXECUTIONS.labels(ex.status).inc()
            log.info("execution finished", execution=ex.id, workflow=ex.workflow, status=ex.status)
            self._kick_queued()
        return True

    # -- schedules -----------------------------------------------------------------------------

    def _due_at(self, wk: WfKey, when: datetime | None) -> None:
        self.due.set(wk, when)

    async def _schedule_loop(self) -> None:
        while True:
            due = self.due.pop_due()
            for wk in due:
                try:
                    await self.fire(wk)
                except LostOwnership:
                    raise
                except (Unavailable, OutcomeUnknown) as exc:
                    log.warning("workflow tick failed; re-planning", workflow=wk[1], error=str(exc))
                    self._due_at(wk, self.clock() + timedelta(seconds=0.5))
                except Exception:
                    log.exception("cannot schedule workflow; retrying in 30 s", workflow=wk[1])
                    self._due_at(wk, self.clock() + timedelta(seconds=30))
            if due:
                continue
            await self.due.wait()

    async def fire(self, wk: WfKey) -> None:
        """Plan a workflow's schedules (``nodes.leader.wftick``) and wait for the next due one."""
        if (wf := self.workflows.get(wk)) is not None and wf.enabled:
            self._due_at(wk, await self.ticks.fire(wk))
