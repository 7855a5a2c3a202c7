"""The document a waiting slot is looked at and released under: read, not cached (D366).

The dependency waiter (``nodes/leader/depwait.py``) is woken by its upstreams' records and runs;
the job's own document reaches the leader through the scheduler's job watch, which etcd does not
order against those. An edit answered before an upstream finished — a fixed command, a lowered
``run_as``, a removed secret, a disabled schedule — could still be missing from the cache when
the release minted the run, which D334 promises to mint from the job as it is at release. A read
is linearizable: it holds every write answered before it. Workflows were read already (few)."""

from __future__ import annotations

from typing import Any

import structlog

from cluster.etcd import Compare, Etcd
from cluster.keys import Keys
from cluster.models import Job
from cluster.workflows import Workflow

log = structlog.get_logger(__name__)


async def slot_doc(
    etcd: Etcd, keys: Keys, project: str, job: str
) -> tuple[Job | Workflow | None, Any]:
    """The job (or ``@workflow``) of a waiting slot as it is now — None when it is gone, or for
    a job document this version cannot read (its slot waits and ends at ``max_wait``, D332) —
    and the compare that the release adds: the document is still the one read."""
    key = keys.workflow(project, job[1:]) if job.startswith("@") else keys.job(project, job)
    kv = await etcd.get(key)
    same = Compare.modified(key, kv.mod_revision if kv is not None else 0)
    if kv is None:
        return None, same
    if job.startswith("@"):
        return Workflow.model_validate_json(kv.value), same
    try:
        return Job.model_validate_json(kv.value), same
    except ValueError as exc:  # written by a newer version, or by hand
        log.error("cannot read job of a waiting slot", job=f"{project}/{job}", error=str(exc))
        return None, same
