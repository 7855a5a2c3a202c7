"""The builders of run-changing operations, shared by the API, the leader and the worker.

Every path that changes a run builds its operations here (``RunOps``), so all keep the same
invariants (listed in :mod:`cluster.store`'s docstring). Pure: no etcd, the clock and the id
generator are injected.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from cluster.etcd import Op
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import FINISHED, Attempt, Job, Run
from cluster.plan import retry_delay

RETRYABLE = frozenset({"failed", "timed_out", "lost"})


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def tick_record(tick: datetime, schedule: str, fate: str, run_id: str | None) -> str:
    return dumps({"tick": tick.isoformat(), "schedule": schedule, "fate": fate, "run": run_id})


class RunOps:
    """Mints runs and builds the operations that create and finish them (a base of ``Store``)."""

    def __init__(self, keys: Keys, ids: Snowflake, clock: Callable[[], datetime]) -> None:
        self.keys = keys
        self.ids = ids
        self.clock = clock

    def new_run(
        self,
        job: Job,
        *,
        source: str,
        parameters: dict[str, str] | None = None,
        scheduled_at: datetime | None = None,
        schedule: str | None = None,
        status: str = "pending",
    ) -> Run:
        now = self.clock()
        params = {**job.parameters, **(parameters or {})}
        run = Run(
            id=self.ids.next(),
            project=job.project,
            job=job.name,
            status=status,  # type: ignore[arg-type]
            source=source,  # type: ignore[arg-type]
            schedule=schedule,
            scheduled_at=scheduled_at,
            created_at=now,
            parameters=params,
            snapshot=job.spec(),
        )
        if status in FINISHED:
            run.finished_at = now
        return run

    def queue_key(self, run: Run) -> str:
        return self.keys.queue_entry(run.snapshot.priority, run.id)

    def create_run_ops(self, run: Run) -> list[Any]:
        """Ops that create a run: record, per-job index, and (unless finished) active + queue."""
        doc = run.model_dump_json()
        ops = [
            Op.put(self.keys.run(run.project, run.id), doc),
            Op.put(self.keys.job_run(run.project, run.job, run.id), run.status),
        ]
        if not run.finished:
            ops.append(Op.put(self.keys.active(run.project, run.job, run.id), run.status))
            ops.append(Op.put(self.queue_key(run), doc))
        return ops

    def finish_ops(
        self,
        run: Run,
        *,
        status: str,
        exit_code: int | None = None,
        signal: int | None = None,
        error: str | None = None,
        result: Any = None,
        claim_revision: int | None = None,
        slot: str | Sequence[str] | None = None,
        log: str | None = None,
        output_bytes: int | None = None,
        reason: str | None = None,
        peak_memory: int | None = None,
        cpu_seconds: float | None = None,
    ) -> tuple[Run, list[Any]]:
        """Close the current attempt; either finish the run or queue its next attempt."""
        now = self.clock()
        attempt = Attempt(
            attempt=run.attempt,
            status=status,  # type: ignore[arg-type]
            node=run.node,
            started_at=run.started_at,
            finished_at=now,
            exit_code=exit_code,
            signal=signal,
            error=error,
            claim_revision=claim_revision or run.claim_revision,
            log=log,
            output_bytes=output_bytes,
            reason=reason,
            peak_memory=peak_memory,
            cpu_seconds=cpu_seconds,
        )
        # shallow: the copy's own fields are replaced below, nested ones only read (a deep copy
        # of the whole run was a tenth of a worker's CPU per run)
        updated = run.model_copy(update={"attempts": [*run.attempts, attempt]})
        updated.exit_code, updated.signal, updated.error = exit_code, signal, error
        updated.reason = reason
        updated.claim_revision = attempt.claim_revision
        if result is not None:
            updated.result = result
        ops: list[Any] = [
            Op.delete(self.keys.claim(run.id)),
            Op.delete(self.keys.control(run.id)),
        ]
        for key in [slot] if isinstance(slot, str) else slot or ():  # job's and budgets' slots
            ops.append(Op.delete(key))
        spec = run.snapshot
        if status in RETRYABLE and run.attempt <= spec.retries:
            delay = retry_delay(spec.retry_interval, spec.retry_backoff, run.attempt)
            updated.status = "pending"
            updated.attempt = run.attempt + 1
            updated.node = None
            updated.started_at = None
            updated.finished_at = None
            updated.not_before = now + timedelta(seconds=delay)
            doc = updated.model_dump_json()
            ops += [
                Op.put(self.keys.run(run.project, run.id), doc),
                Op.put(self.queue_key(updated), doc),
            ]
        else:
            updated.status = status  # type: ignore[assignment]
            updated.finished_at = now
            updated.not_before = None
            ops += [
                Op.put(self.keys.run(run.project, run.id), updated.model_dump_json()),
                Op.put(self.keys.job_run(run.project, run.job, run.id), status),
                Op.delete(self.keys.active(run.project, run.job, run.id)),
            ]
        return updated, ops
