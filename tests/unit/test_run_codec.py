"""A run's (and an execution's) snapshot is validated once per distinct content (D450, D452,
``cluster.runcodec``).

The fast path (a snapshot already validated from the same content) must give the very objects
pydantic gives: many varied records — every status and source, attempts, parameters, results,
workflow tasks, unicode, and snapshots with and without each optional part — are decoded by
plain pydantic (a model whose snapshot has no cache), by the cache's miss path (pydantic behind
the cache) and by its hit path, and compared field by field, types and fields set included.
Content pydantic refuses is refused on every decode; content that differs only in a JSON type
(``1`` / ``1.0`` / ``true``) or in key order is never taken for another's.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError

from cluster.models import FINISHED, MAX_JOB_BYTES, JobSpec, Run, RunSource, RunStatus
from cluster.runcodec import SnapshotCache, snapshot_cache
from cluster.workflows import Execution, TaskStatus, WorkflowSpec, execution_json

T0 = datetime(2026, 12, 7, 9, 0, 0, 123456, tzinfo=UTC)
CACHE = snapshot_cache(JobSpec)


class PlainRun(Run):
    """The reference: the same record, its snapshot validated by pydantic every time."""

    snapshot: JobSpec


SNAPSHOTS: list[dict[str, Any]] = [
    {"name": "j", "command": "true"},
    {"name": "j", "command": "true", "schedules": [{"cron": "* * * * * *"}], "keep_runs": 1000},
    {
        "name": "unicode-job",
        "description": 'déjà vu — 日本語 ✓ "quoted" \\ back\nslash',
        "command": "echo 'héllo wörld' && printf '%s' \"$CRONMESH_PARAM_X\"",
        "schedules": [
            {"cron": "0 3 * * *", "timezone": "Europe/Paris", "dst": {"gap": "skip"}},
            {"at": "2027-01-02T03:04:05+01:00", "parameters": {"X": "1"}},
            {
                "cron": "*/5 * * * *",
                "calendar": {"skip": ["holidays"]},
                "deadlines": {"start_within": 60, "succeed_within": 600},
                "depends_on": [{"job": "upstream", "require": "finished"}],
                "not_before": "06:30",
                "max_wait": 3600,
            },
        ],
        "parameters": {"X": "default", "Y": "ÿ"},
        "timeout": 30.5,
        "retries": 3,
        "retry_interval": 2,
        "retry_backoff": 2.0,
        "overlap": "forbid",
        "max_parallel": 2,
        "catchup": "all",
        "priority": -7,
        "tags": ["etl", "nightly", "Ω"],
        "budgets": ["db"],
        "target": {"group": "workers", "selector": "zone=a,disk in (ssd)"},
        "run_as": {"user": "svc", "group": "svc"},
        "env": {"PLAIN": "v", "TOKEN": {"secret": "api-token"}},
        "kill_grace": 1.5,
        "keep_days": 7,
        "resources": {"memory": "256Mi", "cpu": "500m", "pids": 64},
        "deadlines": {"start_within": 30},
        "notifications": [
            {"on": ["failure"], "when": "change", "email": {"to": ["ops@example.com"]}},
            {"webhook": {"url": "https://hooks.example.com/x", "secret_env": "HOOK_KEY"}},
        ],
    },
    {"name": "py", "python": {"callable": "mod.sub:fn", "args": [1, True, 1.0, "x", None]}},
    {"name": "py", "python": {"callable": "mod.sub:fn", "args": [True, 1, 1.0, "x", None]}},
    {"name": "py", "python": {"callable": "mod.sub:fn", "args": [1.0, 1, True, "x", None]}},
    {"name": "py", "python": {"callable": "m:f", "kwargs": {"a": {"b": [0, False, 0.0]}}}},
    {"name": "fresh", "command": "true", "expected_every": 3600, "notifications": []},
    {"name": "off", "command": ":", "enabled": False, "schedules": [{"cron": "@every 90s"}]},
]


def _snapshots() -> list[dict[str, Any]]:
    """Each snapshot as a stored record holds it: the document pydantic writes."""
    return [json.loads(JobSpec.model_validate(s).model_dump_json()) for s in SNAPSHOTS]


def _record(rnd: random.Random, snapshot: dict[str, Any], i: int) -> bytes:
    status = rnd.choice(get_args(RunStatus))
    finished = status in FINISHED
    attempts = [
        {
            "attempt": n,
            "status": rnd.choice(get_args(RunStatus)),
            "node": rnd.choice([None, "node-1", "nœud-2"]),
            "started_at": (T0 + timedelta(seconds=n)).isoformat(),
            "finished_at": rnd.choice([None, (T0 + timedelta(seconds=n + 1)).isoformat()]),
            "exit_code": rnd.choice([None, 0, 1, 137]),
            "signal": rnd.choice([None, 9]),
            "error": rnd.choice([None, "exit 1", "ошибка ✗"]),
            "claim_revision": rnd.choice([None, 12345]),
            "log": rnd.choice([None, "file:///var/lib/x.log", "s3://b/p/k"]),
            "output_bytes": rnd.choice([None, 0, 10**9]),
            "reason": rnd.choice([None, "oom_killed", "interrupted"]),
            "peak_memory": rnd.choice([None, 123456789]),
            "cpu_seconds": rnd.choice([None, 0.0, 1.25]),
        }
        for n in range(1, rnd.randint(0, 3) + 1)
    ]
    workflow = rnd.random() < 0.3
    doc: dict[str, Any] = {
        "id": f"{388250434512375808 + i:019d}",
        "project": rnd.choice(["p", "proj-ü", "bench"]),
        "job": snapshot["name"] if not workflow else "@wf:task",
        "status": status,
        "attempt": max(1, len(attempts)),
        "node": rnd.choice([None, "node-1"]),
        "source": rnd.choice(get_args(RunSource)),
        "schedule": rnd.choice([None, "abcdef0123"]),
        "scheduled_at": rnd.choice([None, T0.isoformat(), "2026-12-07T09:00:00Z"]),
        "created_at": (T0 - timedelta(microseconds=i)).isoformat(),
        "started_at": rnd.choice([None, T0.isoformat()]),
        "finished_at": T0.isoformat() if finished else None,
        "not_before": rnd.choice([None, (T0 + timedelta(minutes=5)).isoformat()]),
        "exit_code": rnd.choice([None, 0, 2]),
        "signal": None,
        "result": rnd.choice([None, 1, 1.5, True, "ü", [1, "two", None], {"k": {"n": [0.5]}}]),
        "error": rnd.choice([None, "failed: exit 2", "délai dépassé"]),
        "reason": rnd.choice([None, "oom_killed"]),
        "parameters": rnd.choice([{}, {"X": "1"}, {"X": "ünï", "Y": ""}]),
        "claim_revision": rnd.choice([None, 99]),
        "attempts": attempts,
        "snapshot": snapshot,
        "execution": "0388250434512375000" if workflow else None,
        "task": "task" if workflow else None,
        "env": {"CRONMESH_UPSTREAM_A": "résultat"} if workflow else {},
    }
    if rnd.random() < 0.3:  # a record as an older version wrote it: optional fields left out
        for name in ("execution", "task", "env", "reason", "claim_revision"):
            doc.pop(name, None)
    return json.dumps(doc, ensure_ascii=rnd.random() < 0.5).encode()


def same(a: Any, b: Any, where: str = "run") -> None:
    """Equal, of the same types all the way down, with the same fields set."""
    if isinstance(a, BaseModel):
        assert isinstance(b, BaseModel), where
        assert a.model_fields_set == b.model_fields_set, where
        for name in type(a).model_fields:
            same(getattr(a, name), getattr(b, name), f"{where}.{name}")
        return
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, datetime):
        assert a == b and a.utcoffset() == b.utcoffset(), where
    else:
        assert a == b, where


def test_varied_records_decode_to_the_same_runs_on_every_path() -> None:
    rnd = random.Random(450)
    snapshots = _snapshots()
    records = [_record(rnd, snapshots[i % len(snapshots)], i) for i in range(400)]
    CACHE.clear()
    hits = CACHE.hits
    for raw in records:
        plain = PlainRun.model_validate_json(raw)
        CACHE.clear()
        missed = Run.model_validate_json(raw)  # validated by pydantic behind the cache
        hit = Run.model_validate_json(raw)  # the same content again: from the cache
        same(plain, missed)
        same(plain, hit)
        assert hit.snapshot is missed.snapshot
        assert hit == missed and hit.model_dump_json() == plain.model_dump_json()
        again = Run.model_validate(json.loads(raw))  # a dict, as model_validate callers give
        same(plain, again)
    assert CACHE.hits - hits == 2 * len(records)
    # across records: one validation per distinct snapshot, every other decode a hit
    CACHE.clear()
    hits, misses = CACHE.hits, CACHE.misses
    for raw in records:
        same(PlainRun.model_validate_json(raw), Run.model_validate_json(raw))
    assert CACHE.misses - misses == len(snapshots)
    assert CACHE.hits - hits == len(records) - len(snapshots)


def test_json_types_and_key_order_are_never_confused() -> None:
    CACHE.clear()
    decoded = []
    for i in (3, 4, 5):  # args [1, True, 1.0, ...] in three orders: equal in Python, not in JSON
        doc = {"id": "1", "project": "p", "job": "py", "source": "manual"}
        doc |= {"created_at": T0.isoformat(), "snapshot": SNAPSHOTS[i]}
        run = Run.model_validate_json(json.dumps(doc))
        assert run.snapshot.python is not None
        decoded.append([type(v) for v in run.snapshot.python.args])
        same(PlainRun.model_validate_json(json.dumps(doc)), run)
    assert decoded[0][:3] == [int, bool, float]
    assert decoded[1][:3] == [bool, int, float]
    assert decoded[2][:3] == [float, int, bool]
    assert len(CACHE) == 3
    snap = {"name": "j", "command": "true", "retries": 1}
    swapped = {"retries": 1, "command": "true", "name": "j"}
    for s in (snap, swapped):
        doc = {"id": "1", "project": "p", "job": "j", "source": "manual"}
        Run.model_validate({**doc, "created_at": T0, "snapshot": s})
    assert len(CACHE) == 5  # key order is content too: a miss, validated in full


def test_what_pydantic_refuses_is_refused_every_time() -> None:
    CACHE.clear()
    base = {"id": "1", "project": "p", "job": "j", "source": "manual", "created_at": T0}
    good = {"name": "j", "command": "true", "schedules": [{"cron": "* * * * *"}]}
    Run.model_validate({**base, "snapshot": good})
    bad = [
        {**good, "schedules": [{"cron": "61 * * * *"}]},
        {**good, "command": "x" * (MAX_JOB_BYTES + 1)},
        {**good, "retries": True, "unknown": 1},
        {**good, "retries": 1.5},
        {"name": "j"},
    ]
    for snap in bad:
        for _ in range(2):
            with pytest.raises(ValidationError):
                Run.model_validate({**base, "snapshot": snap})
            with pytest.raises(ValidationError):
                Run.model_validate_json(json.dumps({**base, "created_at": "x", "snapshot": snap}))
    assert len(CACHE) == 1  # only the good one is kept


def test_an_instance_passes_through_and_objects_are_not_json_data() -> None:
    spec = JobSpec(name="j", command="true")
    run = Run(id="1", project="p", job="j", source="manual", created_at=T0, snapshot=spec)
    assert run.snapshot is spec  # D422: not validated again
    CACHE.clear()
    data = {"name": "j", "command": "true", "schedules": [{"at": T0}]}  # a datetime object
    run = Run(id="1", project="p", job="j", source="manual", created_at=T0, snapshot=data)
    assert run.snapshot.schedules[0].at == T0
    assert len(CACHE) == 0  # not JSON data: validated, not kept


def test_the_cache_is_bounded_by_count_and_bytes() -> None:
    cache = SnapshotCache(JobSpec, kept=3, max_bytes=10_000)

    def decode(value: Any) -> Any:
        return cache.validate(value, JobSpec.model_validate)

    for i in range(10):
        decode({"name": f"j{i}", "command": "true"})
    assert len(cache) == 3 and cache.misses == 10
    decode({"name": "j9", "command": "true"})
    assert cache.hits == 1
    decode({"name": "j0", "command": "true"})  # dropped, oldest first
    assert cache.misses == 11
    big = {"name": "big", "command": "x" * 6_000}
    decode(big)
    decode({"name": "big2", "command": "y" * 6_000})
    assert len(cache) == 1 and cache.bytes <= 10_000
    decode({"name": "huge", "command": "z" * 20_000})  # larger than the bound: never kept
    assert cache.bytes <= 10_000 and len(cache) == 1


class PlainExecution(Execution):
    """The reference for executions: the workflow snapshot validated by pydantic every time."""

    snapshot: WorkflowSpec


WORKFLOWS: list[dict[str, Any]] = [
    {"name": "w", "tasks": [{"name": "a", "command": "true"}]},
    {
        "name": "etl",
        "description": "naïve — 日本語",
        "tasks": [
            {"name": "extract", "command": "echo ü", "retries": 2, "env": {"K": "v"}},
            {"name": "wait", "external": True, "depends_on": ["extract"]},
            {
                "name": "load",
                "python": {"callable": "m:f", "args": [1, True, 1.0]},
                "depends_on": ["wait"],
                "trigger_rule": "all_done",
                "target": {"selector": "zone=a"},
                "resources": {"memory": "64Mi"},
            },
        ],
        "schedules": [{"cron": "0 * * * *", "timezone": "Asia/Tokyo"}],
        "parameters": {"DAY": "mon"},
        "priority": 5,
        "max_active": 2,
        "deadlines": {"succeed_within": 3600},
    },
]


def test_varied_executions_decode_to_the_same_executions_on_every_path() -> None:
    rnd = random.Random(452)
    cache = snapshot_cache(WorkflowSpec)
    specs = [json.loads(WorkflowSpec.model_validate(w).model_dump_json()) for w in WORKFLOWS]
    statuses = get_args(TaskStatus)
    for i in range(120):
        spec = specs[i % len(specs)]
        doc = {
            "id": f"{i + 1:019d}",
            "project": "p",
            "workflow": spec["name"],
            "status": rnd.choice(["queued", "running", "succeeded", "failed", "cancelled"]),
            "created_at": T0.isoformat(),
            "started_at": rnd.choice([None, T0.isoformat()]),
            "parameters": rnd.choice([{}, {"DAY": "dï"}]),
            "tasks": {
                t["name"]: {
                    "status": rnd.choice(statuses),
                    "run_id": rnd.choice([None, "0388250434512375808"]),
                    "result": rnd.choice([None, 1, True, 1.0, {"rows": [1, "é"]}]),
                    "error": rnd.choice([None, "exit 3"]),
                    "previous_runs": rnd.choice([[], ["1", "2"]]),
                }
                for t in spec["tasks"]
            },
            "snapshot": spec,
        }
        raw = json.dumps(doc, ensure_ascii=rnd.random() < 0.5)
        plain = PlainExecution.model_validate_json(raw)
        cache.clear()
        missed = Execution.model_validate_json(raw)
        hit = Execution.model_validate_json(raw)
        same(plain, missed)
        same(plain, hit)
        assert hit.snapshot is missed.snapshot
        assert hit.model_dump_json() == plain.model_dump_json()
        # the stored record, its snapshot's JSON kept per snapshot object (D453): the same bytes
        assert execution_json(hit) == execution_json(missed) == plain.model_dump_json()
        changed = hit.model_copy(update={"status": "failed", "reruns": i})
        assert execution_json(changed) == changed.model_dump_json()
