"""`cluster.tickplan.job_size` and `cluster.runs.spec_of`: a job's document size and its spec
snapshot, kept per Job object (D312)."""

from __future__ import annotations

from datetime import UTC, datetime

from cluster.models import Job
from cluster.tickplan import job_size
from tests.runbuild import run_ops, stored_job

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(command: str) -> Job:
    return stored_job(T0, command=command)


def test_the_size_is_the_documents_and_a_replaced_job_gets_its_own() -> None:
    small = job("true")
    assert job_size(small) == len(small.model_dump_json())
    assert job_size(small) == len(small.model_dump_json())  # kept: the same answer
    big = job("echo " + "x" * 5000)  # the job changed: the leader holds a new object
    assert job_size(big) == len(big.model_dump_json()) > job_size(small) + 5000
    twin = small.model_copy()  # equal but another object: measured itself
    assert job_size(twin) == job_size(small)


def test_runs_of_one_job_object_share_its_spec_and_a_changed_job_gets_a_new_one() -> None:
    ops = run_ops(T0)
    old = job("true")
    a = ops.new_run(old, source="manual")
    b = ops.new_run(old, source="manual")
    assert a.snapshot is b.snapshot and a.snapshot == old.spec()
    new = job("false")  # the job changed: the leader holds a new object
    c = ops.new_run(new, source="manual")
    assert c.snapshot.command == "false" and a.snapshot.command == "true"
    # what is written is each run's own document, whatever objects it shares in memory
    assert a.model_dump_json() != c.model_dump_json()
