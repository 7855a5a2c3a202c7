"""A run embeds its job's spec snapshot without checking it again (D422): building a run from a
validated ``JobSpec`` (or a ``Job``'s spec) encodes nothing, while a snapshot that arrives as
data — a dict, a stored record's JSON — is validated in full, its size check included."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from cluster.models import MAX_JOB_BYTES, JobSpec, Run
from cluster.runs import spec_of
from tests.runbuild import run_ops, stored_job

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def _run(snapshot: Any) -> Run:
    return Run(id="1", project="p", job="j", source="manual", created_at=T0, snapshot=snapshot)


@pytest.fixture
def encodings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often a JobSpec document is encoded (what the size check does)."""
    seen: list[int] = []
    encode = JobSpec.model_dump_json

    def counted(self: JobSpec, **kw: Any) -> str:
        seen.append(1)
        return encode(self, **kw)

    monkeypatch.setattr(JobSpec, "model_dump_json", counted)
    return seen


def test_a_run_built_from_a_jobs_spec_encodes_nothing_again(encodings: list[int]) -> None:
    job = stored_job(T0)
    ops = run_ops(T0)
    before = len(encodings)
    run = ops.new_run(job, source="schedule", scheduled_at=T0, schedule="x")
    assert len(encodings) == before  # the size check did not run again for this run
    assert run.snapshot is spec_of(job)  # the snapshot is the job's, passed as it is
    spec = JobSpec(name="k", command="true")  # validated here: checked once
    after = len(encodings)
    assert _run(spec).snapshot is spec and len(encodings) == after


def test_a_snapshot_given_as_data_is_still_checked_in_full() -> None:
    # each part within its own bounds, the document over MAX_JOB_BYTES
    env = {f"V{i}": "x" * 4000 for i in range(60)}
    huge = {"name": "j", "command": "x" * 30_000, "env": env}
    with pytest.raises(ValidationError, match=f"at most {MAX_JOB_BYTES} allowed"):
        _run(huge)
    with pytest.raises(ValidationError, match="exactly one of 'command' or 'python'"):
        _run({"name": "j"})
    ok = _run(JobSpec(name="j", command="true"))
    data = ok.model_dump_json()
    assert Run.model_validate_json(data) == ok  # a stored record reads back the same
    stored = ok.model_dump(mode="json")
    stored["snapshot"].update(command=huge["command"], env=env)
    with pytest.raises(ValidationError, match=f"at most {MAX_JOB_BYTES} allowed"):
        Run.model_validate(stored)  # a record's snapshot is a dict: validated, size included
