"""Typed access to workflows and executions in etcd.

Every change of an execution is a compare-and-swap on the execution record's mod revision; the
leader's writes additionally compare its election key (fencing). User actions (trigger, rerun,
cancel, report) only change the record; the leader's workflow engine reacts to the change and
starts what is due.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from cluster.budget_store import budget_guards, named
from cluster.dag import Graph, ancestors, rerun_set
from cluster.depends_store import depends_guards
from cluster.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from cluster.etcd import Compare, Op
from cluster.groups import target_guards
from cluster.history import MAX_RERUNS, execution_charge
from cluster.ids import is_id
from cluster.models import Run, active_since
from cluster.runs import TICK_SOURCES
from cluster.secret_store import reference_guards, references
from cluster.store import Store, dumps
from cluster.txnfit import fit_compares
from cluster.workflows import (
    Execution,
    TaskState,
    Workflow,
    WorkflowSpec,
    env_name,
    execution_json,
    parse_report_key,
    task_job_name,
)

CAS_TRIES = 10
EXECUTIONS_PER_READ = 16  # execution records per etcd read (each up to ~1 MiB)
EXECUTIONS_PAGE_BYTES = 16 * 1024 * 1024  # of execution records in one listing page


class WorkflowNotFound(NotFound):
    code = "workflow_not_found"


class ExecutionNotFound(NotFound):
    code = "execution_not_found"


@dataclass(frozen=True, slots=True)
class StoredExecution:
    execution: Execution
    mod_revision: int


def new_execution(
    store: Store,
    wf: Workflow,
    *,
    parameters: dict[str, str],
    source: str = "manual",
    scheduled_at: Any = None,
) -> Execution:
    spec = wf.spec()
    ex = Execution(
        id=store.ids.next(),
        project=wf.project,
        workflow=wf.name,
        source=source,  # type: ignore[arg-type]
        scheduled_at=scheduled_at,
        created_at=store.clock(),
        parameters={**spec.parameters, **parameters},
        tasks={t.name: TaskState() for t in spec.tasks},
        snapshot=spec,
    )
    if source in TICK_SOURCES and wf.project in store.history_over:
        # a tick while the project's run history is at its quota: kept as a cancelled
        # execution that starts no task (D318), as a job's tick makes a skipped run
        ex.status, ex.cancel_requested, ex.finished_at = "cancelled", True, ex.created_at
    return ex


def create_execution_ops(keys: Any, ex: Execution) -> list[Any]:
    doc = execution_json(ex)
    charge = execution_charge(len(doc.encode()), len(ex.tasks))
    return [
        Op.put(keys.execution(ex.project, ex.id), doc),
        Op.put(keys.workflow_execution(ex.project, ex.workflow, ex.id), ex.id),
        Op.put(keys.history_charge(ex.project, ex.id), str(charge)),
        Op.put_if_absent(keys.project(ex.project), dumps({"name": ex.project})),
    ]


def execution_charges(ex: Execution) -> int:
    """What creating ``ex`` charges its project (D318): its record. Its task runs are charged
    as the leader creates them and are not refused then: an execution admitted runs to its end."""
    return execution_charge(len(execution_json(ex).encode()), len(ex.tasks))


def task_run(store: Store, ex: Execution, task: str, graph: Graph | None = None) -> Run:
    """The first attempt of one task: a run whose snapshot is the task as a job document."""
    spec = ex.snapshot
    t = spec.task(task)
    env = {
        "CRONMESH_EXECUTION_ID": ex.id,
        "CRONMESH_WORKFLOW": ex.workflow,
        "CRONMESH_TASK": task,
        "CRONMESH_SCHEDULED_AT": (
            ex.scheduled_at.isoformat().replace("+00:00", "Z") if ex.scheduled_at else ""
        ),
    }
    for up in ancestors(graph or spec.graph(), task):
        state = ex.tasks[up]
        env[f"CRONMESH_UPSTREAM_{env_name(up)}_STATUS"] = state.status
        if state.result is not None:
            env[f"CRONMESH_RESULT_{env_name(up)}"] = json.dumps(state.result)
    return Run(
        id=store.ids.next(),
        project=ex.project,
        job=task_job_name(ex.workflow, task),
        source="manual" if ex.source == "manual" else "schedule",
        # The tick reaches the process through env; on the run it would count the DAG's
        # progress as the run's start lag (cronmesh_start_lag_seconds is about ticks of jobs).
        scheduled_at=None,
        created_at=store.clock(),
        parameters={**t.parameters, **ex.parameters},
        snapshot=spec.job_spec(t),
        execution=ex.id,
        task=task,
        env=env,
    )


class WorkflowStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.etcd = store.etcd
        self.keys = store.keys

    # -- templates -----------------------------------------------------------------------------

    async def get_workflow_kv(self, project: str, name: str) -> tuple[Workflow, int]:
        kv = await self.etcd.get(self.keys.workflow(project, name))
        if kv is None:
            raise WorkflowNotFound(
                f"workflow {name!r} not found in project {project!r}", field="name"
            )
        return Workflow.model_validate_json(kv.value), kv.mod_revision

    async def list_workflows(
        self, project: str, *, after: str | None = None, limit: int = 1000
    ) -> tuple[list[Workflow], str | None]:
        """A page of the project's workflows by name, and the name to continue ``after``."""
        base = self.keys.workflows(project)
        res = await self.etcd.range_page(base, after=after, limit=limit)
        wfs = [Workflow.model_validate_json(kv.value) for kv in res.kvs]
        return wfs, (res.kvs[-1].key[len(base) :] if res.more and res.kvs else None)

    async def put_workflow(
        self, project: str, spec: WorkflowSpec, *, create_only: bool = False
    ) -> tuple[Workflow, bool]:
        key = self.keys.workflow(project, spec.name)
        for _ in range(5):
            kv = await self.etcd.get(key)
            if kv is not None and create_only:
                raise Conflict(f"workflow {spec.name!r} already exists", field="name")
            old = Workflow.model_validate_json(kv.value) if kv else None
            now = self.store.clock()
            wf = Workflow(
                **spec.model_dump(),
                project=project,
                created_at=old.created_at if old else now,
                updated_at=now,
                active_since=active_since(old, spec, now),
            )
            doc = wf.model_dump_json()
            await self.store.check_quota(
                project,
                "workflow",
                creating=kv is None,
                old_size=len(kv.value) if kv else 0,
                new_size=len(doc),
            )
            ops = [
                Op.put(key, doc),
                *self.store.size_ops(project, "workflow", spec.name, doc),
                Op.put_if_absent(self.keys.project(project), dumps({"name": project})),
            ]
            # a task may target only a group granted to the project (D155)
            guards = await target_guards(
                self.etcd,
                self.keys,
                project,
                [
                    (f"tasks.{i}.target.group", t.target.group)
                    for i, t in enumerate(spec.tasks)
                    if t.target.group is not None
                ],
            )
            refs = references(spec.model_dump(mode="json", include={"tasks"}))
            guards += await reference_guards(self.etcd, self.keys, project, refs)
            guards += await budget_guards(
                self.etcd,
                self.keys,
                project,
                named(spec.model_dump(mode="json", include={"tasks"})),
            )
            upstreams = await depends_guards(  # its upstreams exist, with no cycle (D293)
                self.etcd, self.keys, project, ("workflow", spec.name), spec.schedules
            )
            fit_compares([("tasks", guards), ("schedules", upstreams)])
            compares = [Compare.modified(key, kv.mod_revision if kv else 0), *guards, *upstreams]
            res = await self.etcd.txn(compares, ops)
            if res.succeeded:
                return wf, kv is None
        raise Conflict(f"workflow {spec.name!r} is being changed concurrently; retry", field="name")

    async def delete_workflow(self, project: str, name: str) -> None:
        key = self.keys.workflow(project, name)
        res = await self.etcd.txn(
            [Compare.exists(key)],
            [
                Op.delete(key),
                *self.store.size_deletes(project, "workflow", name),
                Op.delete(self.keys.workflow_schedule_state(project, name)),
                Op.delete(self.keys.workflow_ticks(project, name), prefix=True),
                Op.delete(self.keys.open_slots(project, f"@{name}"), prefix=True),  # D234
                Op.delete(self.keys.waitings(project, f"@{name}"), prefix=True),  # D330
                Op.delete(self.keys.slot_alarm(project, f"@{name}")),
            ],
        )
        if not res.succeeded:
            raise WorkflowNotFound(
                f"workflow {name!r} not found in project {project!r}", field="name"
            )

    # -- executions ----------------------------------------------------------------------------

    async def trigger(self, project: str, name: str, parameters: dict[str, str]) -> Execution:
        wf, rev = await self.get_workflow_kv(project, name)
        ex = new_execution(self.store, wf, parameters=parameters)
        await self.store.check_history(project, execution_charges(ex))
        res = await self.etcd.txn(
            [
                Compare.modified(self.keys.workflow(project, name), rev),
                Compare.absent(self.keys.execution(project, ex.id)),
            ],
            create_execution_ops(self.keys, ex),
        )
        if not res.succeeded:
            raise Conflict(f"workflow {name!r} changed while triggering; retry", field="name")
        return ex

    async def get_kv(self, project: str, exec_id: str) -> StoredExecution:
        if not is_id(exec_id):
            raise ExecutionNotFound(f"execution {exec_id!r} not found", field="execution_id")
        kv = await self.etcd.get(self.keys.execution(project, exec_id))
        if kv is None:
            raise ExecutionNotFound(
                f"execution {exec_id!r} not found in project {project!r}", field="execution_id"
            )
        return StoredExecution(Execution.model_validate_json(kv.value), kv.mod_revision)

    async def view(self, project: str, exec_id: str) -> dict[str, Any]:
        """An execution with the live state of its started tasks folded in from their runs."""
        ex = (await self.get_kv(project, exec_id)).execution
        data = ex.model_dump(mode="json")
        started = {n: t.run_id for n, t in ex.tasks.items() if t.run_id}
        runs: dict[str, Run] = {}
        if started:
            kvs = await self.store.get_many(
                [self.keys.run(project, r) for r in started.values() if r]
            )
            runs = {r.id: r for r in (Run.model_validate_json(kv.value) for kv in kvs)}
        for name, task in data["tasks"].items():
            run = runs.get(started.get(name) or "")
            if run is not None:
                if task["status"] == "started":
                    task["status"] = run.status
                task["attempt"] = run.attempt
                task["node"] = run.node
                task["started_at"] = run.started_at.isoformat() if run.started_at else None
                task["finished_at"] = run.finished_at.isoformat() if run.finished_at else None
                task["exit_code"] = run.exit_code
                task["error"] = task["error"] or run.error
            if task["run_id"]:
                task["logs"] = f"/api/v1/projects/{project}/runs/{task['run_id']}/logs"
        failing = [
            n
            for n in ex.snapshot.graph().order
            if data["tasks"][n]["status"] in ("failed", "timed_out", "lost")
        ]
        data["failed_tasks"] = failing
        return data

    async def list_executions(
        self,
        project: str,
        workflow: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> tuple[list[Execution], str | None]:
        """Executions newest first (``before``: an id, older ones only), and the ``before`` of
        the next page. An execution holds its workflow (up to 512 KiB) and its results (256 KiB):
        the ids are read first, the records a few at a time, and a page ends at
        ``EXECUTIONS_PAGE_BYTES``, so neither etcd nor the node builds a huge answer."""
        base = (
            self.keys.workflow_executions(project, workflow)
            if workflow
            else self.keys.executions(project)
        )
        idx = await self.etcd.range(
            base,
            end=base + before if before else None,
            keys_only=True,
            descending=True,
            limit=limit,
        )
        ids = [kv.key.rsplit("/", 1)[-1] for kv in idx.kvs]
        out: list[Execution] = []
        size = 0
        for i in range(0, len(ids), EXECUTIONS_PER_READ):
            chunk = [self.keys.execution(project, x) for x in ids[i : i + EXECUTIONS_PER_READ]]
            for kv in await self.store.get_many(chunk):
                out.append(Execution.model_validate_json(kv.value))
                size += len(kv.value)
            if size >= EXECUTIONS_PAGE_BYTES and i + EXECUTIONS_PER_READ < len(ids):
                out.sort(key=lambda e: e.id, reverse=True)
                return out, out[-1].id
        out.sort(key=lambda e: e.id, reverse=True)
        return out, (ids[-1] if idx.more and ids else None)

    async def _change(
        self,
        project: str,
        exec_id: str,
        change: Callable[[Execution], Coroutine[Any, Any, Execution] | Execution],
    ) -> Execution:
        """Read, change, compare-and-swap; re-read and change again when it moved."""
        for _ in range(CAS_TRIES):
            stored = await self.get_kv(project, exec_id)
            updated = change(stored.execution.model_copy(deep=True))
            if not isinstance(updated, Execution):
                updated = await updated
            key = self.keys.execution(project, exec_id)
            res = await self.etcd.txn(
                [Compare.modified(key, stored.mod_revision)],
                [Op.put(key, execution_json(updated))],
            )
            if res.succeeded:
                return updated
        raise Conflict(f"execution {exec_id} keeps changing; retry", field="execution_id")

    async def rerun(
        self, project: str, exec_id: str, *, from_task: str | None, failed_only: bool
    ) -> Execution:
        def change(ex: Execution) -> Execution:
            if not ex.finished:
                raise Conflict(
                    f"execution {exec_id} is {ex.status}; cancel it or wait for it to finish",
                    field="execution_id",
                )
            if ex.reruns >= MAX_RERUNS:
                # each rerun keeps the earlier task runs (previous_runs): bounded (D318)
                raise QuotaExceeded(
                    f"execution {exec_id} was rerun {ex.reruns} times, the most one may be "
                    "(its earlier task runs are kept with it); trigger a new execution",
                    field="reruns",
                )
            graph = ex.snapshot.graph()
            reset = rerun_set(
                graph,
                {n: t.status for n, t in ex.tasks.items()},
                from_task=from_task,
                failed_only=failed_only,
            )
            if not reset:
                raise Conflict(f"execution {exec_id} has no failed task", field="failed_only")
            for name in reset:
                old = ex.tasks[name]
                history = [*old.previous_runs, *([old.run_id] if old.run_id else [])]
                ex.tasks[name] = TaskState(previous_runs=history)
            ex.status = "queued"
            ex.finished_at = None
            ex.cancel_requested = False
            ex.reruns += 1
            return ex

        # the task runs a rerun creates are charged as the leader creates them; refused here
        # while the project's run history is at its quota
        await self.store.check_history(project, 1)
        return await self._change(project, exec_id, change)

    async def cancel(self, project: str, exec_id: str) -> Execution:
        def change(ex: Execution) -> Execution:
            if ex.finished:
                raise Conflict(
                    f"execution {exec_id} already finished ({ex.status})", field="execution_id"
                )
            ex.cancel_requested = True
            return ex

        ex = await self._change(project, exec_id, change)
        # Running task runs get a cancel request; the leader finishes the execution once they end.
        for task in ex.tasks.values():
            if task.status == "started" and task.run_id:
                try:
                    await self.store.cancel_run(project, task.run_id)
                except (Conflict, NotFound):
                    pass  # finished meanwhile: the engine folds its result in
        return ex

    async def report(
        self, project: str, key: str, status: str, result: Any, error: str | None
    ) -> Execution:
        exec_id, task = parse_report_key(key)

        def change(ex: Execution) -> Execution:
            state = ex.tasks.get(task)
            if state is None or state.report_key != key:
                raise NotFound(f"no task waits for report key {key!r}", field="key")
            if state.status != "waiting":
                raise Conflict(f"task {task!r} is {state.status}, not waiting", field="key")
            from cluster.workflows import stored_result

            state.result = None
            kept, why = stored_result(result, ex.result_bytes())
            state.status = "succeeded" if status == "succeeded" else "failed"
            state.result = kept
            state.error = error or why
            state.finished_at = self.store.clock()
            return ex

        try:
            return await self._change(project, exec_id, change)
        except NotFound as exc:
            raise NotFound(exc.message, field="key") from None

    def require_task(self, ex: Execution, task: str) -> None:
        if task not in ex.tasks:
            raise InvalidInput(f"unknown task {task!r}", field="from_task")
