"""`cluster.execplan`: a workflow execution's next step without etcd (the body of the leader's
`_decide`/`_fold_runs`, issue #20). Table cases on a two-task DAG ``a → b``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from cluster.execplan import admitted, fold_finished, step
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import Run
from cluster.store import Store
from cluster.workflow_store import new_execution, task_run
from cluster.workflows import Execution, Workflow, WorkflowSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STORE = Store(None, Keys("/u"), Snowflake(2), lambda: T0)  # type: ignore[arg-type]


def workflow(**spec: object) -> Workflow:
    base = WorkflowSpec(
        name="w",
        tasks=[
            {"name": "a", "command": "true"},
            {"name": "b", "command": "true", "depends_on": ["a"]},
        ],
        **spec,
    )
    return Workflow(**base.model_dump(), project="p", created_at=T0, updated_at=T0, active_since=T0)


def execution(status: str = "running", **spec: object) -> Execution:
    ex = new_execution(STORE, workflow(**spec), parameters={})
    ex.status = status  # type: ignore[assignment]
    return ex


def finished(ex: Execution, task: str, status: str, at: float) -> Run:
    run = task_run(STORE, ex, task)
    run.status = status  # type: ignore[assignment]
    run.finished_at = T0 + timedelta(seconds=at)
    ex.tasks[task].status = "started"
    ex.tasks[task].run_id = run.id
    return run


def test_admission_counts_running_and_reserved_and_orders_by_priority() -> None:
    queued = execution("queued", max_active=1)
    running = execution("running", max_active=1)
    assert not admitted(queued, [queued, running], set())
    assert admitted(queued, [queued], set())
    assert not admitted(queued, [queued], {"someone-else"})  # a write in flight took the slot
    assert admitted(queued, [queued], {queued.id})  # its own reservation does not count
    first = execution("queued", max_active=1)
    later = execution("queued", max_active=1)
    assert admitted(first, [first, later], set()) and not admitted(later, [first, later], set())


@dataclass
class Case:
    a: str | None = None  # how task a's run ended (None: not started)
    cancel: bool = False
    started: list[str] = field(default_factory=list)  # tasks whose runs are created
    statuses: dict[str, str] = field(default_factory=dict)
    execution: str = "running"


CASES = {
    "fresh: the root task starts": Case(started=["a"], statuses={"a": "started", "b": "pending"}),
    "root succeeded: its child starts": Case(
        a="succeeded", started=["b"], statuses={"a": "succeeded", "b": "started"}
    ),
    "root failed: the child fails upstream, the execution fails": Case(
        a="failed", statuses={"a": "failed", "b": "upstream_failed"}, execution="failed"
    ),
    "root skipped: counts as cancelled": Case(
        a="skipped", statuses={"a": "cancelled"}, execution="failed"
    ),
    "cancel requested before anything ran": Case(
        cancel=True, statuses={"a": "cancelled", "b": "cancelled"}, execution="cancelled"
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_step(name: str) -> None:
    case = CASES[name]
    ex = execution()
    ex.cancel_requested = case.cancel
    if case.a is not None:
        run = finished(ex, "a", case.a, 3)
        assert fold_finished(ex, {"a": run.id}, {run.id: run}) == T0 + timedelta(seconds=3)
    runs, more = step(
        ex,
        ex.snapshot.graph(),
        now=T0,
        new_run=lambda task: task_run(STORE, ex, task),
        base_size=len(ex.model_dump_json()),
    )
    assert not more
    assert [r.task for r in runs] == case.started
    for task, status in case.statuses.items():
        assert ex.tasks[task].status == status, task
    assert ex.status == case.execution
    assert (ex.finished_at is not None) == ex.finished


def test_a_task_whose_run_record_is_gone_is_lost() -> None:
    ex = execution()
    ex.tasks["a"].status = "started"
    ex.tasks["a"].run_id = "r-gone"
    assert fold_finished(ex, {"a": "r-gone"}, {}) is None
    assert ex.tasks["a"].status == "lost"
