"""Per-project quotas on what a project keeps in etcd: jobs, workflows and the bytes of their
documents (D162), and the run history their retention settings let the project keep (D210).

Cluster-wide defaults come from the node config (``quota_jobs``, ``quota_workflows``,
``quota_bytes``); a cluster admin may override them per project (``quotas`` in the project
record). The decision is a pure function of plain numbers (``exceeded``); the store reads the
counts and sizes and writes a document together with its size in one transaction. The run-history
quota is checked when runs are created, against what their records are charged (D318,
``cluster.history``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

# QuotaExceeded lives in cluster/errors.py: one class for every quota and cap (D162, D173)
from cluster.errors import InvalidInput, QuotaExceeded

Kind = Literal["job", "workflow"]
QUOTA_NAMES = ("jobs", "workflows", "bytes", "run_history_bytes")
# Generous: an honest project holds tens to hundreds of jobs of a few KiB each.
DEFAULT_JOBS = 10_000
DEFAULT_WORKFLOWS = 2_000
DEFAULT_BYTES = 32 * 1024 * 1024
# The run history a project's jobs and workflows may keep: the bytes of its run and execution
# records (D318; D210 counted each at its worst). One project alone then stays at a quarter of
# the chart's 4 GiB --quota-backend-bytes (half of etcd's own 2 GiB default: raise it); with
# editors of N projects untrusted, size --quota-backend-bytes >= 2 x N x (this + quota_bytes)
# (docs/operations.md).
DEFAULT_RUN_HISTORY_BYTES = 1024 * 1024 * 1024

# What a run record may still gain while it is not finished (charged by D318): a result, at most
# nodes.worker.MAX_RESULT as stored (the worker drops a larger one after parsing and masking),
# fields a finish sets and an entry per attempt, bounded by their models. The parameters a request
# adds are capped by #19 item 7 (D173) in UTF-8 bytes (stored JSON-escaped: 6 bytes a control
# character) and are in the record from its creation.
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


def exceeded(
    limits: Quotas,
    kind: Kind,
    *,
    count: int,
    total_bytes: int,
    creating: bool,
    old_size: int,
    new_size: int,
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
    return None


def refusal(name: str, limits: Quotas, project: str) -> QuotaExceeded:
    value = limits.as_dict()[name]
    what = {
        "jobs": "jobs",
        "workflows": "workflows",
        "bytes": "bytes of job and workflow documents",
        "run_history_bytes": (
            "bytes of run history (the run and execution records its jobs and workflows keep; "
            "lower keep_runs or keep_executions and let retention prune, or delete runs' jobs)"
        ),
    }
    return QuotaExceeded(
        f"project {project!r} is at its quota of {value} {what[name]} (quotas.{name}); "
        'a cluster admin can raise it with PUT /api/v1/projects/{project} {"quotas": …}',
        field=f"quotas.{name}",
    )
