"""Workflow documents: the template a user writes (tasks + dependencies) and the execution record
(a snapshot of the template plus per-task state) kept in etcd.

Each task attempt is an ordinary run (queue, claim, lease, retries, timeout, logs); the run's
``job`` is ``@<workflow>:<task>`` (a name no job can have) and it carries ``execution``/``task``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from cluster.dag import Graph, TaskNode, TriggerRule, build_graph
from cluster.deadlines import Deadlines, Duration, KillGrace, RetryInterval, Timeout
from cluster.errors import InvalidInput
from cluster.fields import Env, Name, Params, Strict, SubFieldError, no_nul
from cluster.ids import is_id
from cluster.memo import PerObject
from cluster.models import (
    MAX_COMMAND,
    MAX_SCHEDULES,
    Catchup,
    JobSpec,
    PythonTarget,
    RunAs,
    ScheduleSpec,
    Target,
    parse_model,
    run_parameters_capped,
)
from cluster.resources import Resources
from cluster.runcodec import snapshot_field

MAX_TASKS = 500
MAX_WORKFLOW_BYTES = 512 * 1024
MAX_STORED_RESULT = 8 * 1024  # per task, in the execution record (etcd values stay small)
MAX_EXECUTION_RESULTS = 256 * 1024  # all tasks of one execution together
TASK_JOB_PREFIX = "@"

TaskStatus = Literal[
    "pending",  # not started: waiting for its upstream
    "started",  # a run exists (its record has the live status)
    "waiting",  # an external task waits for POST …/executions/report/{key}
    "succeeded",
    "failed",
    "timed_out",
    "lost",
    "cancelled",
    "upstream_failed",
]
ExecStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ExecSource = Literal["manual", "schedule", "catch-up", "hook"]


def task_job_name(workflow: str, task: str) -> str:
    return f"{TASK_JOB_PREFIX}{workflow}:{task}"


def is_task_job(job: str) -> bool:
    return job.startswith(TASK_JOB_PREFIX)


def env_name(task: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in task).upper()


class TaskSpec(Strict):
    name: Name
    command: str | None = Field(default=None, min_length=1, max_length=MAX_COMMAND)
    python: PythonTarget | None = None
    external: bool = False  # no process: completed by POST …/executions/report/{key}
    depends_on: list[Name] = Field(default_factory=list, max_length=MAX_TASKS)
    trigger_rule: TriggerRule = "all_success"
    parameters: Params = Field(default_factory=dict)
    timeout: Timeout = 0
    retries: int = Field(default=0, ge=0, le=100)
    retry_interval: RetryInterval = 10
    retry_backoff: float = Field(default=1.0, ge=1.0, le=10.0)
    target: Target = Field(default_factory=Target)
    budgets: list[Name] = Field(default_factory=list, max_length=8)  # as a job's (D274)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=64)
    run_as: RunAs | None = None  # as a job's (D142)
    env: Env = Field(default_factory=dict)  # as a job's: plain values or {secret: name}
    kill_grace: KillGrace = 10
    resources: Resources | None = None

    _command = field_validator("command")(no_nul)

    @model_validator(mode="after")
    def _one_action(self) -> TaskSpec:
        kinds = sum((self.command is not None, self.python is not None, self.external))
        if kinds != 1:
            raise ValueError("a task needs exactly one of 'command', 'python' or 'external: true'")
        return self


class WorkflowSpec(Strict):
    """What a user writes: the document of the API and of ``cronmesh workflow apply``."""

    name: Name
    description: str = Field(default="", max_length=4096)
    tasks: list[TaskSpec] = Field(min_length=1, max_length=MAX_TASKS)
    edges: list[Annotated[list[Name], Field(min_length=2, max_length=2)]] = Field(
        default_factory=list, max_length=10 * MAX_TASKS
    )
    parameters: Params = Field(default_factory=dict)
    schedules: list[ScheduleSpec] = Field(default_factory=list, max_length=MAX_SCHEDULES)
    catchup: Catchup = "latest"
    starting_deadline: Duration = 0
    catchup_limit: int = Field(default=10, ge=1, le=1000)
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_active: int = Field(default=0, ge=0, le=10_000)  # running executions at once (0: any)
    keep_executions: int = Field(default=50, ge=1, le=10_000)
    # every slot's: its execution must start / succeed within them (a schedule's own win), D229
    deadlines: Deadlines | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def _size(self) -> WorkflowSpec:
        for i, spec in enumerate(self.schedules):
            if spec.calendar is not None:  # not applied to workflows yet (D243): refuse it
                raise SubFieldError(
                    "not supported on workflow schedules yet", f"schedules.{i}.calendar"
                )
        size = len(self.model_dump_json())
        if size > MAX_WORKFLOW_BYTES:
            raise ValueError(f"the workflow is {size} bytes; at most {MAX_WORKFLOW_BYTES} allowed")
        return self

    def graph(self) -> Graph:
        return build_graph(
            [TaskNode(t.name, tuple(t.depends_on), t.trigger_rule) for t in self.tasks],
            [(e[0], e[1]) for e in self.edges],
        )

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def job_spec(self, task: TaskSpec) -> JobSpec:
        """The run snapshot of one task: a job document the run machinery understands."""
        return JobSpec(
            name=task.name,
            command=task.command,
            python=task.python,
            timeout=task.timeout,
            retries=task.retries,
            retry_interval=task.retry_interval,
            retry_backoff=task.retry_backoff,
            target=task.target,
            budgets=task.budgets,
            tags=task.tags,
            run_as=task.run_as,
            env=task.env,
            priority=self.priority,
            kill_grace=task.kill_grace,
            resources=task.resources,
        )


def parse_workflow(data: Any) -> WorkflowSpec:
    """Validate a document, including its graph (errors name the cycle or the bad reference)."""
    spec = parse_model(WorkflowSpec, data)
    spec.graph()
    return spec


READ_ONLY_WORKFLOW_FIELDS = ("project", "created_at", "updated_at", "active_since")


class Workflow(WorkflowSpec):
    project: Name
    created_at: datetime
    updated_at: datetime
    active_since: datetime

    def spec(self) -> WorkflowSpec:
        return WorkflowSpec.model_validate(self.model_dump(exclude=set(READ_ONLY_WORKFLOW_FIELDS)))


class TaskState(BaseModel):
    status: TaskStatus = "pending"
    run_id: str | None = None
    attempt: int | None = None
    node: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    result: Any = None
    report_key: str | None = None
    previous_runs: list[str] = Field(default_factory=list)  # run ids of earlier executions


class Execution(BaseModel):
    id: str
    project: str
    workflow: str
    status: ExecStatus = "queued"
    source: ExecSource = "manual"
    scheduled_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    reruns: int = 0
    parameters: dict[str, str] = Field(default_factory=dict)
    tasks: dict[str, TaskState]
    snapshot: Annotated[WorkflowSpec, snapshot_field(WorkflowSpec)]  # once per content (D452)

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")

    def result_bytes(self) -> int:
        return sum(result_size(t.result) for t in self.tasks.values())

    def dag_states(self) -> dict[str, str]:
        """Task states as ``cluster.dag`` sees them."""
        return {
            n: ("active" if t.status in ("started", "waiting") else t.status)
            for n, t in self.tasks.items()
        }


# An execution's workflow document, encoded once per snapshot object (D453): snapshots are shared
# by the executions decoded from the same content (D452) and never edited in place. At most 64
# kept (64 x MAX_WORKFLOW_BYTES: 32 MiB), all forgotten past that (encoded again: same bytes).
_snapshot_json: PerObject[WorkflowSpec, str] = PerObject(lambda s: s.model_dump_json(), limit=64)


def execution_json(ex: Execution) -> str:
    """``ex.model_dump_json()``, byte for byte (the snapshot is its last field and most of its
    bytes): the record every write of an execution stores (D453)."""
    head = ex.model_dump_json(exclude={"snapshot"})
    return f'{head[:-1]},"snapshot":{_snapshot_json(ex.snapshot)}}}'


def result_size(result: Any) -> int:
    return 0 if result is None else len(json.dumps(result, separators=(",", ":")))


def stored_result(result: Any, used: int = 0) -> tuple[Any, str | None]:
    """A task's result as kept in the execution record (``used``: bytes of results it holds
    already); oversize results are dropped with a note, so the record stays well under etcd's
    request limit whatever the tasks write."""
    size = result_size(result)
    if size > MAX_STORED_RESULT:
        return None, f"result of {size} bytes exceeds {MAX_STORED_RESULT}; not passed downstream"
    if used + size > MAX_EXECUTION_RESULTS:
        return None, (
            f"the execution already holds {used} bytes of results (at most "
            f"{MAX_EXECUTION_RESULTS}); this result is not passed downstream"
        )
    return result, None


class ExecutionRequest(Strict):
    parameters: Params = Field(default_factory=dict)

    _capped = field_validator("parameters")(run_parameters_capped)


class RerunRequest(Strict):
    from_task: Name | None = None
    failed_only: bool = False

    @model_validator(mode="after")
    def _one(self) -> RerunRequest:
        if self.from_task is not None and self.failed_only:
            raise ValueError("give 'from_task' or 'failed_only', not both")
        return self


class ReportRequest(Strict):
    status: Literal["succeeded", "failed"] = "succeeded"
    result: Any = None
    error: str | None = Field(default=None, max_length=4096)


def parse_report_key(key: str) -> tuple[str, str]:
    exec_id, sep, task = key.partition(".")
    if not sep or not is_id(exec_id) or not task:
        raise InvalidInput(f"malformed report key {key!r}", field="key")
    return exec_id, task
