"""The dependency waiter's in-memory picture (review of D294), on plain values: which waiters an
upstream's event kicks after the downstream job is edited, and how often a busy upstream makes
each waiter look."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import Job, JobSpec, parse_model
from cluster.runs import RunOps
from cluster.tickplan import JobPlan
from nodes.leader.depwait import DependencyWaiter

NOW = datetime(2026, 6, 10, 6, tzinfo=UTC)
KEYS = Keys("/t")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def _job(upstream: str) -> Job:
    doc = {
        "name": "down",
        "command": "true",
        "schedules": [{"cron": "0 6 * * *", "depends_on": [{"job": upstream}]}],
    }
    spec = parse_model(JobSpec, doc)
    return Job(**spec.model_dump(), project="p", created_at=NOW, updated_at=NOW,
               active_since=NOW - timedelta(days=9))  # fmt: skip


def _waiter(jobs: dict[tuple[str, str], Job], clock: Clock) -> DependencyWaiter:
    lead: Any = None
    return DependencyWaiter(None, KEYS, None, lead, clock=clock, job_of=jobs.get)  # type: ignore[arg-type]


def _held(job: Job) -> tuple[str, bytes]:
    """The waiting key a tick of ``job`` writes (``hold_runs``), as the waiter's watch gets it."""
    fp = job.schedules[0].fingerprint()
    run = RunOps(KEYS, Snowflake(1), lambda: NOW).new_run(
        job, source="schedule", scheduled_at=NOW, schedule=fp
    )
    plan = JobPlan({}, runs=[(run, KEYS.tick("p", "down", fp, int(NOW.timestamp() * 1000)))])
    waiter = _waiter({}, Clock())
    waiter.hold(job, plan, {})
    [(key, value)] = [(k, v) for k, v in plan.records if k.startswith(KEYS.waitings())]
    return key, value.encode()


def test_an_edit_of_the_downstreams_upstreams_moves_its_waiters_to_the_new_upstream():
    """Before: the index kept the upstreams recorded at fire time, so after ``depends_on`` moved
    from ``a`` to ``b`` (same schedule, same fingerprint) ``b``'s events kicked nobody and the
    slot was released only at its ``max_wait`` (a day by default)."""
    jobs = {("p", "down"): _job("a")}
    clock = Clock()
    waiter = _waiter(jobs, clock)
    key, value = _held(jobs[("p", "down")])
    assert json.loads(value)["upstreams"] == [["job", "a"]]
    waiter._on_waiting(key, value, 5)
    assert waiter.by_upstream[("p", "job", "a")] == {key}
    jobs[("p", "down")] = _job("b")  # edited: waits on b now
    waiter.on_job(("p", "down"))
    assert waiter.by_upstream.get(("p", "job", "a"), set()) == set()
    assert waiter.by_upstream[("p", "job", "b")] == {key}
    waiter.due.pop_due()
    waiter._kick_upstream("p", "job", "b")  # b's slot succeeded
    assert waiter.due.pop_due() == [key]


def test_a_busy_upstream_makes_each_waiter_look_at_most_once_per_pace():
    """1000 slots wait on one upstream that moves every few hundred milliseconds (its runs'
    index entries, its tick records): before, every event made every waiter look again at once
    (8 dependency reads each) — the leader looked without pause. Now upstream events make a
    waiter look at most once per max(1 s, waiters / 50) — 20 s here — and a gate or deadline
    due sooner keeps its instant (D331)."""
    jobs = {("p", "down"): _job("a")}
    clock = Clock()
    waiter = _waiter(jobs, clock)
    key, value = _held(jobs[("p", "down")])
    base = key.rsplit("/", 1)[0]
    keys = [f"{base}/{i:015d}-x" for i in range(1000)]
    for k in keys:
        waiter._on_waiting(k, value, 5)
    assert waiter.pace() == timedelta(seconds=20)
    waiter.due.pop_due()
    for k in keys:  # each looked now
        waiter.looked[k] = clock.now
    waiter.due.set(keys[0], clock.now + timedelta(seconds=3))  # its deadline in 3 s
    for _ in range(50):  # fifty upstream events within the second
        waiter._kick_upstream("p", "job", "a")
    assert waiter.due.pop_due() == []
    clock.now += timedelta(seconds=3)
    assert waiter.due.pop_due() == [keys[0]]  # the deadline was not pushed back
    clock.now += timedelta(seconds=16)
    assert waiter.due.pop_due() == []
    clock.now += timedelta(seconds=1)
    assert sorted(waiter.due.pop_due()) == sorted(keys[1:])  # one look each, 20 s on
    assert len(waiter.due) <= 2 * 1000 + 1024


def test_a_workflow_edit_moves_its_waiters_to_the_new_upstream():
    """Workflow documents were not watched: an edit of a waiting workflow slot's ``depends_on``
    (or disabling it) was seen only at the slot's next look — at worst its ``max_wait``."""
    from cluster.depends_plan import hold_execution
    from cluster.ids import Snowflake as Ids
    from cluster.store import Store
    from cluster.workflow_store import new_execution
    from cluster.workflows import Workflow, WorkflowSpec

    def wf(upstream: str) -> Workflow:
        doc = {
            "name": "etl",
            "tasks": [{"name": "load", "command": "true"}],
            "schedules": [{"cron": "0 6 * * *", "depends_on": [{"job": upstream}]}],
        }
        spec = parse_model(WorkflowSpec, doc)
        return Workflow(**spec.model_dump(), project="p", created_at=NOW, updated_at=NOW,
                        active_since=NOW - timedelta(days=9))  # fmt: skip

    store: Any = Store.__new__(Store)
    store.ids, store.clock = Ids(2), lambda: NOW
    old = wf("a")
    fp = old.schedules[0].fingerprint()
    tick_key = KEYS.workflow_tick("p", "etl", fp, int(NOW.timestamp() * 1000))
    ex = new_execution(store, old, parameters={}, source="schedule", scheduled_at=NOW)
    ops = hold_execution(KEYS, old, ex, tick_key, waiting=(0, 0)) or []
    [(key, value)] = [
        (op.request_put.key.decode(), op.request_put.value)
        for op in ops
        if op.request_put.key.decode().startswith(KEYS.waitings())
    ]
    waiter = _waiter({}, Clock())
    waiter._on_waiting(key, value, 5)
    assert waiter.by_upstream[("p", "job", "a")] == {key}
    waiter.due.pop_due()
    waiter._on_workflow(KEYS.workflow("p", "etl"), wf("b").model_dump_json().encode())
    assert ("p", "job", "a") not in waiter.by_upstream
    assert waiter.by_upstream[("p", "job", "b")] == {key}
    assert waiter.due.pop_due() == [key]  # and it looks again at once
