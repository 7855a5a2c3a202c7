"""What the node saves per run on encoding (D351, D352), checked against the slow paths it
replaces: operations built in place equal the ones built from finished sub-messages, and a run
taken back from the queue memo equals the decoding of the entry written for it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aetcd import rpc

from cluster import runs as run_module
from cluster.etcd import Op
from cluster.models import Run
from cluster.runs import queued_run
from tests.runbuild import run_ops, stored_job

T0 = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key", "value", "lease"),
    [
        ("/t/runs/p/1", '{"a":1}', 0),
        ("/t/claims/1", b"{}", 7587),
        ("/t/control/1", "", 0),  # an empty value is still a put
        ("/t/runs/p/\u00e9", "\u00e9t\u00e9", 1),
    ],
)
def test_put_built_in_place_equals_the_constructed_message(
    key: str, value: str | bytes, lease: int
) -> None:
    data = value.encode() if isinstance(value, str) else value
    expected = rpc.RequestOp(request_put=rpc.PutRequest(key=key.encode(), value=data, lease=lease))
    op = Op.put(key, value, lease)
    assert op == expected
    assert op.WhichOneof("request") == "request_put"
    assert op.SerializeToString() == expected.SerializeToString()


def test_delete_built_in_place_equals_the_constructed_message() -> None:
    assert Op.delete("/t/queue/1") == rpc.RequestOp(
        request_delete_range=rpc.DeleteRangeRequest(key=b"/t/queue/1")
    )
    ranged = Op.delete("/t/queue/", prefix=True)
    assert ranged.WhichOneof("request") == "request_delete_range"
    assert ranged.request_delete_range.range_end == b"/t/queue0"


RUNS = [
    {},
    {"parameters": {"who": "w\u00f6rld"}, "retries": 2, "timeout": 30, "priority": 5},
    {"env": {"A": "1"}, "tags": ["x", "y"], "overlap": "forbid", "max_parallel": 2},
]


@pytest.mark.parametrize("extra", RUNS)
def test_a_run_taken_back_equals_the_decoding_of_its_queue_entry(extra: dict[str, object]) -> None:
    ops = run_ops(T0)
    run = ops.new_run(stored_job(T0, **extra), source="schedule", scheduled_at=T0, schedule="x")
    run.not_before = T0 + timedelta(seconds=1)
    written = ops.create_run_ops(run)
    entry = written[-1].request_put
    assert entry.key.decode() == ops.queue_key(run)
    taken = queued_run(run.id, entry.value)
    assert taken is not None
    assert taken == Run.model_validate_json(entry.value)
    assert taken is not run  # a copy: the creator's later edits do not reach the worker
    assert queued_run(run.id, entry.value) is None  # taken once


def test_a_different_entry_is_decoded_not_taken_back() -> None:
    ops = run_ops(T0)
    run = ops.new_run(stored_job(T0), source="schedule", scheduled_at=T0, schedule="x")
    entry = ops.create_run_ops(run)[-1].request_put.value
    assert queued_run(run.id, entry.replace(b'"pending"', b'"running"')) is None
    assert queued_run(run.id, entry) is None  # the mismatch dropped it: never a stale answer


def test_a_retry_queued_by_a_completion_is_kept_too() -> None:
    ops = run_ops(T0)
    run = ops.new_run(stored_job(T0, retries=1), source="schedule", scheduled_at=T0, schedule="x")
    queued_run(run.id, b"")  # forget the creation's entry
    updated, written = ops.finish_ops(run, status="failed", exit_code=1)
    entry = next(
        op.request_put for op in written if op.request_put.key.decode() == ops.queue_key(updated)
    )
    taken = queued_run(run.id, entry.value)
    assert taken == Run.model_validate_json(entry.value)
    assert taken is not None and taken.attempt == 2 and taken.status == "pending"


def test_finished_runs_are_not_kept_and_the_memo_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_module, "_QUEUED", {})
    monkeypatch.setattr(run_module, "QUEUED_KEPT", 3)
    ops = run_ops(T0)
    skipped = ops.new_run(stored_job(T0), source="schedule", status="skipped")
    ops.create_run_ops(skipped)
    assert run_module._QUEUED == {}
    made = [ops.new_run(stored_job(T0), source="schedule") for _ in range(5)]
    for run in made:
        ops.create_run_ops(run)
    assert list(run_module._QUEUED) == [r.id for r in made[-3:]]  # the oldest went first
