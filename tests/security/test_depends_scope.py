"""``depends_on`` (D291-D296) as an attack surface: an editor of one project cannot wait on (or
learn of) another project's jobs, cannot make the leader's look or the write's cycle search
unbounded, and a viewer cannot rerun a slot to release what waits on it."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from cluster.cron import parse_schedule
from cluster.depends import expected_slots, window_of
from cluster.depends_spec import MAX_CHAIN, MAX_UPSTREAM_SLOTS
from cluster.depends_store import depends_guards
from cluster.errors import InvalidInput
from cluster.models import ScheduleSpec, parse_model
from tests.integration.test_access import call, make_user

NOW = datetime(2026, 12, 6, 15, tzinfo=UTC)


def job(name: str, on: str | None = None) -> dict:
    spec: dict = {"cron": "0 6 * * *"}
    if on is not None:
        spec["depends_on"] = [{"job": on}]
    return {"name": name, "command": "true", "schedules": [spec]}


async def test_another_projects_job_is_not_an_upstream_and_not_an_oracle(cluster):
    await cluster.start()
    status, _ = await cluster.request(
        "PUT", "/api/v1/projects/other/jobs/payroll", json=job("payroll")
    )
    assert status == 201
    token = await make_user(cluster, "eve", {"mine": "editor"})
    # the same answer whether or not the name exists elsewhere
    answers = []
    for name in ("payroll", "nosuchjob"):
        status, text = await call(
            cluster, "PUT", "/api/v1/projects/mine/jobs/spy", token, json=job("spy", name)
        )
        assert status == 400, text
        body = json.loads(text)["error"]
        assert body["field"] == "schedules.0.depends_on.0.job"
        answers.append(body["message"].replace(name, "NAME"))
    assert answers[0] == answers[1] and "in project 'mine'" in answers[0]
    # a path in the name is not a name
    for name in ("../other/payroll", "other/payroll"):
        with pytest.raises(InvalidInput) as exc:
            parse_model(ScheduleSpec, {"cron": "0 6 * * *", "depends_on": [{"job": name}]})
        assert exc.value.field == "depends_on.0.job"


async def test_a_viewer_cannot_rerun_a_slot(cluster):
    await cluster.start()
    token = await make_user(cluster, "vic", {"default": "viewer"})
    status, _ = await call(cluster, "POST", "/api/v1/projects/default/runs/0/rerun", token)
    assert status == 403


def test_a_look_at_a_busy_upstream_over_a_long_window_is_bounded():
    """``@every 1s`` upstream, a 31-day window: 2.7 million slots, of which 1000 are looked at."""
    every = parse_schedule(cron="@every 1s", timezone="UTC")
    window = window_of("31d", NOW, "UTC", None, NOW - timedelta(days=400))
    started = time.process_time()
    slots, cut = expected_slots([("fp", every)], window, NOW - timedelta(days=400))
    assert cut and len(slots) == MAX_UPSTREAM_SLOTS
    assert time.process_time() - started < 1.0


async def test_the_cycle_search_at_write_is_bounded(etcd, keys):
    """A chain of 300 jobs: the write reads at most MAX_CHAIN documents, then refuses."""
    for i in range(300):
        doc = job(f"j{i}", f"j{i + 1}" if i < 299 else None)
        await etcd.put(keys.job("p", f"j{i}"), json.dumps(doc))
    spec = parse_model(ScheduleSpec, {"cron": "0 6 * * *", "depends_on": [{"job": "j0"}]})
    with pytest.raises(InvalidInput) as exc:
        await depends_guards(etcd, keys, "p", ("job", "top"), [spec])
    assert f"more than {MAX_CHAIN}" in exc.value.message
    assert exc.value.field == "schedules.0.depends_on.0.job"
    # a short chain passes, with a compare per document read
    spec = parse_model(ScheduleSpec, {"cron": "0 6 * * *", "depends_on": [{"job": "j290"}]})
    guards = await depends_guards(etcd, keys, "p", ("job", "top"), [spec])
    assert len(guards) == 10


async def test_two_writes_that_close_a_cycle_between_them_cannot_both_land(etcd, keys):
    """a → b and b → a written at once: each write compares the other's document as it read it,
    so one fails, re-reads, sees the cycle and is refused (D293) — never both stored."""
    from cluster.ids import Snowflake
    from cluster.models import JobSpec
    from cluster.store import Store

    store = Store(etcd, keys, Snowflake(3), lambda: NOW)
    for name in ("a", "b"):
        await store.put_job("p", parse_model(JobSpec, job(name)))
    for _ in range(10):
        results = await asyncio.gather(
            store.put_job("p", parse_model(JobSpec, job("a", "b"))),
            store.put_job("p", parse_model(JobSpec, job("b", "a"))),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, InvalidInput)]
        assert len(refused) == 1, results
        assert "depends_on cycle" in refused[0].message
        # undo, to race again
        for name in ("a", "b"):
            await store.put_job("p", parse_model(JobSpec, job(name)))
