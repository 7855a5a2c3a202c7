"""Retention, run by the leader in fenced transactions (a deposed leader deletes nothing).

Job runs: finished runs beyond each job's ``keep_runs``/``keep_days`` (oldest first; a deleted
job's by the deleted-job limits, D181), archived to the log store first when one is configured,
with the job's old tick keys. Workflow executions: finished ones beyond each workflow's
``keep_executions`` (oldest first), with their task runs and old tick keys."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from cluster.election import Leadership
from cluster.etcd import Etcd, Op
from cluster.keys import Keys
from cluster.retention import DELETED_JOB_KEEP_DAYS, DELETED_JOB_KEEP_RUNS, expired_runs
from cluster.store import MAX_TXN_OPS, Store
from cluster.workflows import Execution, Workflow, is_task_job, task_job_name

if TYPE_CHECKING:
    from cluster.models import Job

log = structlog.get_logger(__name__)

Archiver = Callable[[str, str, dict[str, bytes]], Awaitable[object]]
"""``(project, job, {run_id: record JSON})``: keeps records safe before they leave etcd."""

JobKey = tuple[str, str]
WfKey = tuple[str, str]


async def delete_fenced(etcd: Etcd, lead: Leadership, doomed: list[Any]) -> None:
    """Delete in transactions of at most ``MAX_TXN_OPS`` ops, each fenced on leadership: a
    deposed leader deletes nothing. An item of ``doomed`` that is a list is a group kept in one
    transaction (a record, its index entry and its history charge: D318)."""
    batch: list[Any] = []
    for item in doomed:
        group = item if isinstance(item, list) else [item]
        if batch and len(batch) + len(group) > MAX_TXN_OPS:
            await etcd.txn([lead.fence()], batch)
            batch = []
        batch += group
    if batch:
        await etcd.txn([lead.fence()], batch)


class RunRetention:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        leadership: Leadership,
        *,
        clock: Callable[[], datetime],
        job_of: Callable[[JobKey], Job | None],
        active: Mapping[JobKey, set[str]],
        archive: Archiver | None = None,
    ) -> None:
        """``job_of``/``active``: the leader's caches (a current job; active run ids by job)."""
        self.etcd = etcd
        self.keys = keys
        self.lead = leadership
        self.clock = clock
        self._job_of = job_of
        self._active = active
        self.archive = archive

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
            job = self._job_of(jk)
            # a deleted job's runs are history too: kept by the deleted-job limits (D181)
            keep = job.keep_runs if job else DELETED_JOB_KEEP_RUNS
            excess = expired_runs(
                ids,
                keep=keep,
                keep_days=job.keep_days if job else DELETED_JOB_KEEP_DAYS,
                now=self.clock(),
                active=self._active.get(jk, set()),
            )
            if excess and self.archive is not None and not await self._archive(jk, excess):
                continue  # records stay in etcd until they are archived
            for run_id in excess:  # the record and its charge leave together (D318)
                doomed.append(
                    [
                        Op.delete(self.keys.run(jk[0], run_id)),
                        Op.delete(self.keys.job_run(jk[0], jk[1], run_id)),
                        Op.delete(self.keys.history_charge(jk[0], run_id)),
                    ]
                )
            if job is not None:
                ticks = await self.etcd.range(
                    self.keys.ticks(*jk), keys_only=True, descending=True, limit=keep * 2 + 1
                )
                if len(ticks.kvs) > keep * 2:
                    # Keys sort by tick time: delete everything older than the oldest kept.
                    oldest_kept = ticks.kvs[keep * 2 - 1].key
                    doomed.append(Op.delete_range(self.keys.ticks(*jk), oldest_kept))
        await delete_fenced(self.etcd, self.lead, doomed)
        if doomed:
            log.info("pruned finished runs", ops=len(doomed))


class ExecutionRetention:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        store: Store,
        leadership: Leadership,
        *,
        workflow_of: Callable[[WfKey], Workflow | None],
    ) -> None:
        """``workflow_of``: the leader's cache of workflows."""
        self.etcd = etcd
        self.keys = keys
        self.store = store
        self.lead = leadership
        self._workflow_of = workflow_of

    async def prune(self) -> None:
        """Delete finished executions beyond each workflow's ``keep_executions`` (oldest first),
        with their task runs, and old tick keys."""
        base = self.keys.workflow_executions()
        index = await self.etcd.range_all(base, keys_only=True)
        by_wf: dict[WfKey, list[str]] = defaultdict(list)
        for kv in index.kvs:
            project, name, exec_id = self.keys.tail(kv.key, base)[:3]
            by_wf[(project, name)].append(exec_id)
        doomed: list[Any] = []
        for wk, ids in by_wf.items():
            wf = self._workflow_of(wk)
            keep = wf.keep_executions if wf else 0
            excess = sorted(ids)[: max(0, len(ids) - keep)]
            if not excess:
                continue
            kvs = await self.store.get_many([self.keys.execution(wk[0], i) for i in excess])
            found = {kv.key.rsplit("/", 1)[-1] for kv in kvs}
            for exec_id in excess:
                if exec_id not in found:
                    doomed.append(Op.delete(self.keys.workflow_execution(*wk, exec_id)))
                    doomed.append(Op.delete(self.keys.history_charge(wk[0], exec_id)))
            for kv in kvs:
                ex = Execution.model_validate_json(kv.value)
                if not ex.finished:
                    continue
                # each record with its index entry and its charge, in one transaction (D318);
                # the task runs first: a leader killed between two transactions leaves the
                # execution, so the next pass finds and deletes what is left of it
                for name, t in ex.tasks.items():
                    task_job = task_job_name(ex.workflow, name)
                    for run_id in [*t.previous_runs, *([t.run_id] if t.run_id else [])]:
                        doomed.append(
                            [
                                Op.delete(self.keys.run(ex.project, run_id)),
                                Op.delete(self.keys.job_run(ex.project, task_job, run_id)),
                                Op.delete(self.keys.history_charge(ex.project, run_id)),
                            ]
                        )
                doomed.append(
                    [
                        Op.delete(kv.key),
                        Op.delete(self.keys.workflow_execution(*wk, ex.id)),
                        Op.delete(self.keys.history_charge(ex.project, ex.id)),
                    ]
                )
            ticks = await self.etcd.range(
                self.keys.workflow_ticks(*wk), keys_only=True, descending=True, limit=keep * 2 + 1
            )
            if keep and len(ticks.kvs) > keep * 2:
                doomed.append(
                    Op.delete_range(self.keys.workflow_ticks(*wk), ticks.kvs[keep * 2 - 1].key)
                )
        await delete_fenced(self.etcd, self.lead, doomed)
        if doomed:
            log.info("pruned finished executions", ops=len(doomed))
