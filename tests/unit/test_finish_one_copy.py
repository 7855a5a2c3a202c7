"""A run's completion builds its finished (or retried) record in one copy (D401): the record
written is the one the per-field assignments wrote, and the run it was made from is untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cluster.models import Run
from cluster.runs import RunOps
from tests.runbuild import run_ops, stored_job

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


def _running(retries: int) -> tuple[RunOps, Run]:
    job = stored_job(T0, retries=retries, retry_interval=2)
    ops = run_ops(T0 + timedelta(seconds=5))
    run = ops.new_run(job, source="schedule", scheduled_at=T0)
    run = run.model_copy(
        update={"status": "running", "node": "n1", "started_at": T0, "claim_revision": 41}
    )
    return ops, run


def _written(ops: list[object], key: str) -> Run:
    for op in ops:
        put = getattr(op, "request_put", None)
        if put is not None and put.key.decode() == key:
            return Run.model_validate_json(put.value)
    raise AssertionError(f"no put of {key}")


@pytest.mark.parametrize("retries", [0, 1])
def test_the_record_written_is_the_finished_or_retried_run(retries: int) -> None:
    run_ops, run = _running(retries)
    before = run.model_dump_json()
    updated, ops = run_ops.finish_ops(
        run, status="failed", exit_code=3, error="exit 3", result={"n": 1}, cpu_seconds=0.01
    )
    assert run.model_dump_json() == before  # the run it was made from is untouched
    stored = _written(ops, f"/t/runs/p/{run.id}")
    assert stored == updated
    assert (stored.exit_code, stored.error, stored.result) == (3, "exit 3", {"n": 1})
    assert stored.claim_revision == 41
    assert [(a.attempt, a.status, a.node) for a in stored.attempts] == [(1, "failed", "n1")]
    if retries:
        assert (stored.status, stored.attempt, stored.node) == ("pending", 2, None)
        assert stored.started_at is None and stored.finished_at is None
        assert stored.not_before == T0 + timedelta(seconds=7)
    else:
        assert (stored.status, stored.attempt, stored.node) == ("failed", 1, "n1")
        assert stored.finished_at == T0 + timedelta(seconds=5) and stored.not_before is None
    assert {"status", "exit_code", "attempts"} <= updated.model_fields_set
