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

This module keeps the waiters and follows what wakes them; a look itself is
``nodes.leader.depwait_look``.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from cluster import depends_plan
from cluster.depends import Waiting
from cluster.depends_plan import hold_runs
from cluster.depends_spec import MAX_WAIT_DEFAULT
from cluster.depends_store import spec_of
from cluster.etcd import Etcd, Event
from cluster.keys import Keys
from cluster.models import Job
from cluster.store import Store
from cluster.tickplan import JobPlan
from cluster.watch import follow
from cluster.workflows import Workflow
from nodes import metrics
from nodes.leader.depwait_look import Looking
from nodes.leader.loops import DueQueue, retry_later

if TYPE_CHECKING:
    from cluster.election import Leadership

log = structlog.get_logger(__name__)

JobKey = tuple[str, str]
PARALLEL = 8
# Looks caused by upstream events, all waiters together (D331): a waiter looks again at most
# every max(1 s, waiters / LOOKS_PER_SECOND) however busy its upstreams are.
LOOKS_PER_SECOND = 50.0
MIN_PACE = timedelta(seconds=1)


class DependencyWaiter(Looking):
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
