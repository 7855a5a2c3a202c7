"""The run-history bound (D210): pure arithmetic on plain values."""

from __future__ import annotations

from cluster.quotas import (
    DEFAULT_RUN_HISTORY_BYTES,
    Quotas,
    exceeded,
    history_of_size,
    job_history_bytes,
    parse_overrides,
    run_bytes,
    workflow_history_bytes,
)


def test_a_kept_run_counts_its_snapshot_twice_and_each_attempt():
    assert run_bytes(1000, 2) - run_bytes(0, 2) == 2000
    assert run_bytes(0, 3) - run_bytes(0, 0) == 3 * 1024
    assert job_history_bytes(1000, 100, 0) == 100 * run_bytes(1000, 0)


def test_the_review_case_no_longer_fits_the_default():
    # a 241 KB job keeping 100,000 runs: ~65 GB counted, far beyond the 1 GiB default
    assert job_history_bytes(241_000, 100_000, 0) > 50 * 10**9
    # 50 honest 2 KB jobs with the default retention (100 runs) fit, and 500 keeping 10 runs
    assert 50 * job_history_bytes(2_000, 100, 0) < DEFAULT_RUN_HISTORY_BYTES
    assert 500 * job_history_bytes(2_000, 10, 0) < DEFAULT_RUN_HISTORY_BYTES
    # the 32 MiB document quota filled with 241 KB jobs keeping 100 runs: refused
    assert 136 * job_history_bytes(241_000, 100, 0) > DEFAULT_RUN_HISTORY_BYTES
    assert 17 * job_history_bytes(241_000, 100, 0) > DEFAULT_RUN_HISTORY_BYTES


def test_workflows_grow_with_executions_tasks_and_retries():
    one = workflow_history_bytes(5_000, 1, [0, 0])
    assert workflow_history_bytes(5_000, 10, [0, 0]) == 10 * one
    assert workflow_history_bytes(5_000, 1, [0, 0, 0]) > one
    assert workflow_history_bytes(5_000, 1, [5, 0]) == one + 5 * 1024


def test_history_of_a_stored_document_reads_its_retention():
    job = {"keep_runs": 10, "retries": 1}
    assert history_of_size("job", job, 500) == job_history_bytes(500, 10, 1)
    assert history_of_size("job", {}, 500) == job_history_bytes(500, 100, 0)  # the defaults
    wf = {"keep_executions": 3, "tasks": [{"retries": 2}, {"name": "b"}]}
    assert history_of_size("workflow", wf, 800) == workflow_history_bytes(800, 3, [2, 0])


def test_only_growth_of_the_history_is_refused():
    limits = Quotas(run_history_bytes=1000)
    common = {"count": 0, "total_bytes": 0, "creating": False, "old_size": 1, "new_size": 1}
    grow = exceeded(limits, "job", **common, total_history=900, old_history=0, new_history=200)
    assert grow == "run_history_bytes"
    fits = exceeded(limits, "job", **common, total_history=900, old_history=150, new_history=250)
    assert fits is None
    # over a lowered quota, shrinking still passes
    assert (
        exceeded(limits, "job", **common, total_history=5000, old_history=900, new_history=10)
        is None
    )


def test_overrides_accept_the_new_quota():
    assert parse_overrides({"run_history_bytes": 5}) == {"run_history_bytes": 5}
    assert Quotas().overridden({"run_history_bytes": 7}).run_history_bytes == 7
