"""Per-project quotas on what a project keeps in etcd: jobs, workflows and the bytes of their
documents (D162), and the run history their retention settings let the project keep (D210).

Cluster-wide defaults come from the node config (``quota_jobs``, ``quota_workflows``,
``quota_bytes``); a cluster admin may override them per project (``quotas`` in the project
record). The decision is a pure function of plain numbers (``exceeded``); the store reads the
counts and sizes and writes a document together with its size in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

# QuotaExceeded lives in cluster/errors.py: one class for every quota and cap (D162, D173)
from cluster.errors import InvalidInput, QuotaExceeded
from cluster.limits import MAX_RUN_PARAMETER_BYTES

Kind = Literal["job", "workflow"]
QUOTA_NAMES = ("jobs", "workflows", "bytes", "run_history_bytes")
# Generous: an honest project holds tens to hundreds of jobs of a few KiB each.
DEFAULT_JOBS = 10_000
DEFAULT_WORKFLOWS = 2_000
DEFAULT_BYTES = 32 * 1024 * 1024
# The run history a project's jobs and workflows may keep, counted at its worst (D210). One
# project alone then stays at a quarter of the chart's 4 GiB --quota-backend-bytes (half of
# etcd's own 2 GiB default: raise it); with editors of N projects untrusted, size
# --quota-backend-bytes >= 2 x N x (this + quota_bytes) (docs/operations.md).
DEFAULT_RUN_HISTORY_BYTES = 1024 * 1024 * 1024

# What one kept run record may hold besides its job snapshot (D210). The parameters a request
# adds are capped by #19 item 7 (D173) in UTF-8 bytes; stored, a control character is JSON-escaped
# as \u00XX (6 bytes). A stored result is at most nodes.worker.MAX_RESULT as stored (the worker
# drops a larger one after parsing and masking); a record's own fields and each attempt's entry
# are bounded by their models (ids, times, a capped error text).
RUN_PARAMETER_BYTES = 6 * MAX_RUN_PARAMETER_BYTES
RUN_RESULT_BYTES = 64 * 1024
RUN_RECORD_BYTES = 4 * 1024
ATTEMPT_BYTES = 1024
# An execution's task results and what a task run gets from its upstreams (cluster.workflows)
EXECUTION_RESULT_BYTES = 256 * 1024
TASK_RESULT_BYTES = 8 * 1024
MAX_QUOTA = 10**12


@dataclass(frozen=True, slots=True)
class Quotas:
    jobs: int = DEFAULT_JOBS
    workflows: int = DEFAULT_WORKFLOWS
    bytes: int = DEFAULT_BYTES
    run_history_bytes: int = DEFAULT_RUN_HISTORY_BYTES

    def overridden(self, overrides: Mapping[str, Any] | None) -> Quotas:
        """These limits with a project's overrides (unknown names and bad values are ignored:
        the API checked them when they were written)."""
        if not overrides:
            return self
        valid = {
            k: v
            for k, v in overrides.items()
            if k in QUOTA_NAMES and type(v) is int and 0 <= v <= MAX_QUOTA
        }
        return replace(self, **valid)

    def as_dict(self) -> dict[str, int]:
        return {
            "jobs": self.jobs,
            "workflows": self.workflows,
            "bytes": self.bytes,
            "run_history_bytes": self.run_history_bytes,
        }


def parse_overrides(value: Any) -> dict[str, int]:
    """A project's ``quotas`` as sent to the API: ``{<QUOTA_NAMES>: int >= 0}``
    (``null`` drops an override). Raises ``InvalidInput`` naming the field."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("quotas must be an object", field="quotas")
    out: dict[str, int] = {}
    for name, limit in value.items():
        if name not in QUOTA_NAMES:
            raise InvalidInput(
                f"unknown quota {name!r} (known: {', '.join(QUOTA_NAMES)})", field="quotas"
            )
        if limit is None:
            continue
        if type(limit) is not int or not 0 <= limit <= MAX_QUOTA:
            raise InvalidInput(
                f"quotas.{name} must be an integer within 0..{MAX_QUOTA}", field=f"quotas.{name}"
            )
        out[name] = limit
    return out


def run_bytes(snapshot: int, retries: int) -> int:
    """The most one kept run record may take: its snapshot (at most the document it was made
    from), its parameters (the document's defaults again, merged with the request's), a
    result, the record's own fields and one entry per attempt."""
    return (
        2 * snapshot
        + RUN_PARAMETER_BYTES
        + RUN_RESULT_BYTES
        + RUN_RECORD_BYTES
        + ((retries + 1) * ATTEMPT_BYTES)
    )


def job_history_bytes(doc_size: int, keep_runs: int, retries: int) -> int:
    """The run history a job may keep: ``keep_runs`` records at their bound. ``keep_days``
    only removes runs sooner, so the count bounds it."""
    return keep_runs * run_bytes(doc_size, retries)


def workflow_history_bytes(doc_size: int, keep_executions: int, task_retries: list[int]) -> int:
    """The run history a workflow may keep: per kept execution its record (snapshot, its
    parameters — the workflow's defaults with the request's —, the task results it stores, a
    state per task) and one run per task: the task's part of the document twice (snapshot and
    its own parameters; all tasks together at most the document twice), the execution's
    parameters, its upstreams' results (JSON inside JSON: twice), its result and attempts.
    Reruns keep earlier task runs on the same execution: not counted (D210, known limit)."""
    tasks = len(task_retries)
    upstream = 2 * min(EXECUTION_RESULT_BYTES, max(tasks - 1, 0) * TASK_RESULT_BYTES)
    params = doc_size + RUN_PARAMETER_BYTES
    execution = doc_size + params + EXECUTION_RESULT_BYTES + (tasks + 1) * RUN_RECORD_BYTES
    per_task = params + upstream + RUN_RESULT_BYTES + RUN_RECORD_BYTES
    task_runs = 2 * doc_size + sum(per_task + (r + 1) * ATTEMPT_BYTES for r in task_retries)
    return keep_executions * (execution + task_runs)


def history_of_size(kind: Kind, doc: Mapping[str, Any], size: int) -> int:
    def num(value: Any, default: int) -> int:
        return value if type(value) is int and value >= 0 else default

    if kind == "job":
        return job_history_bytes(size, num(doc.get("keep_runs"), 100), num(doc.get("retries"), 0))
    found = doc.get("tasks")
    tasks: list[Any] = found if isinstance(found, list) else []
    retries = [num(t.get("retries"), 0) if isinstance(t, dict) else 0 for t in tasks]
    return workflow_history_bytes(size, num(doc.get("keep_executions"), 50), retries)


def exceeded(
    limits: Quotas,
    kind: Kind,
    *,
    count: int,
    total_bytes: int,
    creating: bool,
    old_size: int,
    new_size: int,
    total_history: int = 0,
    old_history: int = 0,
    new_history: int = 0,
) -> str | None:
    """Which quota a write of one document would exceed, if any.

    ``count``: the project's documents of ``kind`` now; ``total_bytes``: the bytes of all its
    job and workflow documents now (``old_size`` of them is the document being replaced). A
    write that does not grow the project (an update to a smaller or same-sized document, a
    delete) always passes, so a project over a lowered quota can still shrink.
    """
    if creating:
        limit = limits.jobs if kind == "job" else limits.workflows
        if count + 1 > limit:
            return "jobs" if kind == "job" else "workflows"
    if new_size > old_size and total_bytes - old_size + new_size > limits.bytes:
        return "bytes"
    if new_history > old_history and (
        total_history - old_history + new_history > limits.run_history_bytes
    ):
        return "run_history_bytes"
    return None


def refusal(name: str, limits: Quotas, project: str) -> QuotaExceeded:
    value = limits.as_dict()[name]
    what = {
        "jobs": "jobs",
        "workflows": "workflows",
        "bytes": "bytes of job and workflow documents",
        "run_history_bytes": (
            "bytes of run history (keep_runs/keep_executions x the bound of one record, "
            "which grows with the document and its retries; lower keep_runs or "
            "keep_executions, or shrink the document)"
        ),
    }
    return QuotaExceeded(
        f"project {project!r} is at its quota of {value} {what[name]} (quotas.{name}); "
        'a cluster admin can raise it with PUT /api/v1/projects/{project} {"quotas": …}',
        field=f"quotas.{name}",
    )
