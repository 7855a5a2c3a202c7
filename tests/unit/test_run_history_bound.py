"""What a record is charged to the run-history quota (D318): pure values, no etcd."""

from __future__ import annotations

from datetime import UTC, datetime

from cluster.history import execution_charge, over_quota, parse_bytes, run_charge
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import Job
from cluster.quotas import (
    DEFAULT_RUN_HISTORY_BYTES,
    EXECUTION_RESULT_BYTES,
    RUN_RESULT_BYTES,
    Quotas,
    parse_overrides,
)
from cluster.runs import RunOps

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def small_job(name: str, size: int = 2048) -> Job:
    """A job whose stored document is about ``size`` bytes (a command, a description, a schedule
    and a few parameters, as an honest one)."""
    job = Job(
        name=name,
        project="p",
        command='./report.sh --day "$CRONMESH_PARAM_DAY" --out /srv/reports',
        schedules=[{"cron": "0 30 2 * * *", "timezone": "Europe/Paris"}],
        parameters={"DAY": "today", "REGION": "eu-west"},
        created_at=NOW,
        updated_at=NOW,
        active_since=NOW,
    )
    pad = size - len(job.model_dump_json())
    return job.model_copy(update={"description": "d" * max(pad, 0)})


def ops() -> RunOps:
    return RunOps(Keys("/x"), Snowflake(1), lambda: NOW)


def finished_record(job: Job, result: object) -> tuple[int, int]:
    """(the charge at creation, the charge once it succeeded with ``result``)."""
    r = ops()
    run = r.new_run(job, source="schedule")
    created = run_charge(run, len(run.model_dump_json().encode()))
    run.status, run.node, run.started_at = "running", "node-1", NOW
    done, _ = r.finish_ops(run, status="succeeded", exit_code=0, result=result)
    return created, run_charge(done, len(done.model_dump_json().encode()))


def test_hundreds_of_small_jobs_keeping_100_runs_fit_the_default() -> None:
    job = small_job("nightly-report")
    assert 1900 <= len(job.model_dump_json()) <= 2100
    _, finished = finished_record(job, {"rows": 1234, "file": "s3://bucket/2026-12-06.csv"})
    # a finished run is charged what its record takes: its snapshot, parameters and fields
    assert finished < 6 * 1024, finished
    jobs = DEFAULT_RUN_HISTORY_BYTES // (100 * finished)
    assert jobs >= 1000, jobs  # D210's bound let ~62 such jobs in
    assert 500 * 100 * finished < DEFAULT_RUN_HISTORY_BYTES


def test_a_run_in_flight_is_charged_what_it_may_grow_to() -> None:
    job = small_job("j")
    created, finished = finished_record(job, {"v": "y" * 60_000})
    assert finished < created  # the finish gives back what the result did not use
    assert created > RUN_RESULT_BYTES  # the largest result fits what was charged
    r = ops()
    run = r.new_run(job, source="manual")
    size = len(run.model_dump_json().encode())
    retrying = job.model_copy(update={"retries": 3})
    more = r.new_run(retrying, source="manual")
    assert run_charge(more, size) - run_charge(run, size) == 3 * 1024  # an entry per attempt
    run.status = "succeeded"
    assert run_charge(run, size) == size


def test_an_execution_is_charged_its_task_results_up_to_their_cap() -> None:
    assert execution_charge(1000, 2) - execution_charge(1000, 1) > 8 * 1024
    big = execution_charge(1000, 500)
    assert big - 1000 - 500 * 4096 == EXECUTION_RESULT_BYTES


def test_the_decision_and_stored_values() -> None:
    assert not over_quota(900, 100, 1000)
    assert over_quota(900, 101, 1000)
    assert not over_quota(5000, 0, 1000)  # nothing added: never refused
    assert parse_bytes(b"123") == 123
    assert parse_bytes(b"-5") == 0 and parse_bytes(b"x") == 0 and parse_bytes(None) == 0


def test_overrides_accept_the_quota() -> None:
    assert parse_overrides({"run_history_bytes": 5}) == {"run_history_bytes": 5}
    assert Quotas().overridden({"run_history_bytes": 7}).run_history_bytes == 7


def test_a_wide_workflow_step_stays_within_etcds_ops_per_transaction() -> None:
    """Each created run now writes its history charge too (5 ops): the engine's step packs no
    more runs than one transaction takes (etcd refuses more than 128 ops)."""
    from cluster.execplan import step
    from cluster.store import MAX_TXN_OPS, Store
    from cluster.workflow_store import new_execution, task_run
    from cluster.workflows import Workflow, WorkflowSpec

    store = Store(None, Keys("/u"), Snowflake(2), lambda: NOW)  # type: ignore[arg-type]
    spec = WorkflowSpec(name="w", tasks=[{"name": f"t{i}", "command": "true"} for i in range(60)])
    wf = Workflow(
        **spec.model_dump(), project="p", created_at=NOW, updated_at=NOW, active_since=NOW
    )
    ex = new_execution(store, wf, parameters={})
    ex.status = "running"
    runs, more = step(
        ex, spec.graph(), now=NOW, new_run=lambda name: task_run(store, ex, name), base_size=0
    )
    assert more and runs
    ops = [op for run in runs for op in store.create_run_ops(run)]
    assert len(ops) + 1 <= MAX_TXN_OPS - 4, len(ops)  # with the execution's put and guards
