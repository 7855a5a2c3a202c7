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
from cluster.history import run_charge
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.memo import PerObject
from cluster.models import FINISHED, Attempt, Job, JobSpec, Run
from cluster.plan import retry_delay

RETRYABLE = frozenset({"failed", "timed_out", "lost"})

# Each job's spec snapshot, built once per Job object and shared by the runs it creates (D312,
# ``cluster.memo``): a run's snapshot is never edited either (it is serialised with the run).
spec_of: PerObject[Job, JobSpec] = PerObject(lambda job: job.spec())


# The queue entries this process has just encoded, by run id (D352): a worker of the same process
# takes the run back instead of validating the entry's JSON again (~90 µs of a ~1 KB record), when
# the entry it reads is byte for byte the one encoded here. Each is taken once; a run another node
# claims is dropped, oldest first, beyond QUEUED_KEPT. What is kept is a copy of the run as it was
# encoded (its nested values, like the spec snapshot, are never edited in place).
_QUEUED: dict[str, tuple[bytes, Run]] = {}
QUEUED_KEPT = 2048


def remember_queued(run: Run, data: bytes) -> None:
    """Keep ``run`` as the decoding of the queue entry ``data`` written for it."""
    if len(_QUEUED) >= QUEUED_KEPT:
        del _QUEUED[next(iter(_QUEUED))]
    _QUEUED[run.id] = (data, run.model_copy())


def queued_run(run_id: str, data: bytes) -> Run | None:
    """The run this process encoded as ``data`` (taken: asked again, it answers None); None when
    it encoded none for ``run_id`` or another document."""
    kept = _QUEUED.pop(run_id, None)
    if kept is None or kept[0] != data:
        return None
    return kept[1]


# What ``create_run_ops`` writes for an unfinished run: record, job index, history charge (D318),
# active key, queue entry — callers that pack runs into one transaction count with it
CREATE_RUN_OPS = 5
# The sources of the leader's ticks: skipped while their project is over its run-history quota
TICK_SOURCES = frozenset({"schedule", "catch-up"})


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def tick_record(tick: datetime, schedule: str, fate: str, run_id: str | None) -> str:
    return dumps({"tick": tick.isoformat(), "schedule": schedule, "fate": fate, "run": run_id})


class RunOps:
    """Mints runs and builds the operations that create and finish them (a base of ``Store``)."""

    # Projects whose run history is at their quota, as the leader last counted (D318): their
    # ticks make skipped runs. Set by ``nodes.leader.history`` on the leader's store only.
    history_over: frozenset[str] = frozenset()

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
            snapshot=spec_of(job),
        )
        if status == "pending" and source in TICK_SOURCES and job.project in self.history_over:
            run.status = "skipped"
            run.error = "skipped: the project's run history is at its quota (run_history_bytes)"
        if run.status in FINISHED:
            run.finished_at = now
        return run

    def charge_of(self, run: Run) -> int:
        """What creating ``run`` charges its project (D318)."""
        return run_charge(run, len(run.model_dump_json().encode()))

    def charge_op(self, run: Run, doc: str | bytes) -> Any:
        """The run's charge to its project's run-history quota, for a record ``doc`` (D318)."""
        charge = run_charge(run, len(doc.encode() if isinstance(doc, str) else doc))
        return Op.put(self.keys.history_charge(run.project, run.id), str(charge))

    def queue_key(self, run: Run) -> str:
        return self.keys.queue_entry(run.snapshot.priority, run.id)

    def create_run_ops(self, run: Run) -> list[Any]:
        """Ops that create a run: record, per-job index, and (unless finished) active + queue."""
        doc = run.model_dump_json().encode()
        ops = [
            Op.put(self.keys.run(run.project, run.id), doc),
            Op.put(self.keys.job_run(run.project, run.job, run.id), run.status),
            self.charge_op(run, doc),
        ]
        if not run.finished:
            ops.append(Op.put(self.keys.active(run.project, run.job, run.id), run.status))
            ops.append(Op.put(self.queue_key(run), doc))
            remember_queued(run, doc)
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
        ended_at: datetime | None = None,
    ) -> tuple[Run, list[Any]]:
        """Close the current attempt; either finish the run or queue its next attempt.
        ``ended_at``: when its process ended, if known (D460), else now."""
        now = self.clock()
        ended = ended_at or now
        attempt = Attempt(
            attempt=run.attempt,
            status=status,  # type: ignore[arg-type]
            node=run.node,
            started_at=run.started_at,
            finished_at=ended,
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
        # shallow and in one step: the copy's own fields are given here, nested ones only read
        # (a deep copy of the whole run was a tenth of a worker's CPU per run; a pydantic
        # ``__setattr__`` per field, ~3 µs each, another 1 % of the loop's CPU, D401)
        fields: dict[str, Any] = {
            "attempts": [*run.attempts, attempt],
            "exit_code": exit_code,
            "signal": signal,
            "error": error,
            "reason": reason,
            "claim_revision": attempt.claim_revision,
        }
        if result is not None:
            fields["result"] = result
        ops: list[Any] = [
            Op.delete(self.keys.claim(run.id)),
            Op.delete(self.keys.control(run.id)),
        ]
        for key in [slot] if isinstance(slot, str) else slot or ():  # job's and budgets' slots
            ops.append(Op.delete(key))
        spec = run.snapshot
        if status in RETRYABLE and run.attempt <= spec.retries:
            delay = retry_delay(spec.retry_interval, spec.retry_backoff, run.attempt)
            fields.update(
                status="pending",
                attempt=run.attempt + 1,
                node=None,
                started_at=None,
                finished_at=None,
                not_before=now + timedelta(seconds=delay),
            )
            updated = run.model_copy(update=fields)
            data = updated.model_dump_json().encode()
            ops += [
                Op.put(self.keys.run(run.project, run.id), data),
                Op.put(self.queue_key(updated), data),
                self.charge_op(updated, data),
            ]
            remember_queued(updated, data)
        else:
            fields.update(status=status, finished_at=ended, not_before=None)
            updated = run.model_copy(update=fields)
            doc = updated.model_dump_json()
            ops += [
                Op.put(self.keys.run(run.project, run.id), doc),
                self.charge_op(updated, doc),
                Op.put(self.keys.job_run(run.project, run.job, run.id), status),
                Op.delete(self.keys.active(run.project, run.job, run.id)),
            ]
        return updated, ops
