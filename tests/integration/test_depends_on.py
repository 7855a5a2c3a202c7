"""Cross-job dependencies end to end (issue 24 item 1, D291-D296) on a real etcd and a real node:
a slot of a job that depends on an upstream waits (its tick record open, a waiting key), shows
what it waits for, and creates its run once the upstream's slots in its window meet the
requirement; ``any_succeeded``/``finished`` over a failing upstream; ``max_wait`` ends a slot
that can never be released; bad documents are 400s naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api_helpers import JOBS
from tests.conftest import wait_for
from tests.integration.test_notifications import Receiver, allow_loopback


def at(seconds: float) -> str:
    """An instant ``seconds`` from now, on a whole second (so second-level crons line up)."""
    t = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
    return t.isoformat()


async def put(cluster: Any, job: dict[str, Any]) -> None:
    status, body = await cluster.request("PUT", f"{JOBS}/{job['name']}", json=job)
    assert status in (200, 201), body


async def slot_of(cluster: Any, name: str) -> dict[str, Any] | None:
    _, page = await cluster.request("GET", f"{JOBS}/{name}/slots")
    return page["slots"][0] if page["slots"] else None


async def runs_of(cluster: Any, name: str) -> list[dict[str, Any]]:
    _, page = await cluster.request("GET", f"/api/v1/projects/default/runs?job={name}")
    return list(page["runs"])


def upstream(name: str, command: str) -> dict[str, Any]:
    return {"name": name, "command": command, "schedules": [{"cron": "*/2 * * * * *"}]}


@pytest.mark.timeout(90)
async def test_a_slot_waits_for_all_its_upstream_slots_then_runs_once(cluster, etcd, keys):
    await cluster.start()
    await put(cluster, upstream("hourly", "sleep 2"))
    when = at(7)
    down = {
        "name": "daily",
        "command": "true",
        "schedules": [
            {"at": when, "depends_on": [{"job": "hourly", "window": "5s"}], "max_wait": "60s"}
        ],
    }
    await put(cluster, down)

    async def waiting():
        slot = await slot_of(cluster, "daily")
        return slot if slot and slot.get("waiting") else None

    slot = await wait_for(waiting, 30, what="the daily slot waits")
    assert slot["run"] is None and slot["outcome"] is None and slot["open"]
    assert (await etcd.range(keys.waitings("default", "daily"))).kvs
    dep = slot["waiting_for"]["depends_on"][0]
    assert dep["upstream"] == "hourly" and dep["require"] == "all_succeeded"
    assert dep["met"] is False and dep["slots"]["pending"] >= 1, dep

    async def released():
        slot = await slot_of(cluster, "daily")
        return slot if slot and slot.get("run") else None

    slot = await wait_for(released, 40, what="the daily slot released")
    assert slot["outcome"] == "fired", slot
    assert not (await etcd.range(keys.waitings("default", "daily"))).kvs
    # every hourly slot in (at - 5 s, at] had succeeded before the release
    tick = datetime.fromisoformat(slot["tick"])
    ups = [
        r
        for r in await runs_of(cluster, "hourly")
        if tick - timedelta(seconds=5) < datetime.fromisoformat(r["scheduled_at"]) <= tick
    ]
    assert len(ups) in (2, 3), ups
    released_at = datetime.fromisoformat(slot["released_at"])
    for r in ups:
        assert r["status"] == "succeeded", r
        assert datetime.fromisoformat(r["finished_at"]) <= released_at
    runs = await wait_for(lambda: _done(cluster, "daily"), 20, what="the daily run finished")
    assert [r["id"] for r in runs] == [slot["run"]]  # created once


async def _done(cluster: Any, name: str) -> list[dict[str, Any]] | None:
    runs = await runs_of(cluster, name)
    return runs if runs and all(r["status"] == "succeeded" for r in runs) else None


@pytest.mark.timeout(90)
async def test_requirements_over_a_failing_upstream(cluster, etcd, keys):
    await cluster.start()
    await put(cluster, upstream("flaky", "exit 3"))
    when = at(6)

    def dep_job(name: str, require: str) -> dict[str, Any]:
        return {
            "name": name,
            "command": "true",
            "schedules": [
                {
                    "at": when,
                    "depends_on": [{"job": "flaky", "window": "4s", "require": require}],
                    "max_wait": "8s",
                }
            ],
        }

    for name, require in (("all", "all_succeeded"), ("any", "any_succeeded"), ("fin", "finished")):
        await put(cluster, dep_job(name, require))

    async def settled(name: str) -> dict[str, Any] | None:
        slot = await slot_of(cluster, name)
        return slot if slot and slot.get("outcome") else None

    fin = await wait_for(lambda: settled("fin"), 40, what="finished: released")
    assert fin["outcome"] == "fired" and fin["run"], fin
    for name in ("all", "any"):
        slot = await wait_for(lambda n=name: settled(n), 40, what=f"{name}: ended")
        assert slot["outcome"] == "skipped_dependency", slot
        assert slot["run"] is None and "max_wait passed" in slot["reason"], slot
        dep = slot["waited"]["depends_on"][0]
        assert dep["slots"]["failed"] >= 1 and dep["slots"]["succeeded"] == 0, dep
        assert await runs_of(cluster, name) == []
    assert not (await etcd.range(keys.waitings())).kvs


@pytest.mark.parametrize(
    ("dependency", "field"),
    [
        ({"job": "nope"}, "schedules.0.depends_on.0.job"),
        ({"workflow": "nope"}, "schedules.0.depends_on.0.workflow"),
        ({"job": "base", "window": "fortnight"}, "schedules.0.depends_on.0.window"),
        ({"job": "base", "require": "most"}, "schedules.0.depends_on.0.require"),
        ({}, "schedules.0.depends_on.0.workflow"),
        ({"job": "base", "workflow": "w"}, "schedules.0.depends_on.0.workflow"),
        ("base", "schedules.0.depends_on.0"),  # a task's form: a bare name (D335)
    ],
)
async def test_bad_dependencies_are_400s_naming_the_field(cluster, dependency, field):
    await cluster.start()
    await put(cluster, upstream("base", "true"))
    job = {
        "name": "child",
        "command": "true",
        "schedules": [{"cron": "0 6 * * *", "depends_on": [dependency]}],
    }
    status, body = await cluster.request("PUT", f"{JOBS}/child", json=job)
    assert status == 400, body
    assert body["error"]["field"] == field, body
    status, _ = await cluster.request("GET", f"{JOBS}/child")
    assert status == 404  # nothing written


async def test_a_cycle_is_refused_with_the_cycle_named(cluster):
    await cluster.start()

    def job(name: str, on: str | None) -> dict[str, Any]:
        spec: dict[str, Any] = {"cron": "0 6 * * *"}
        if on:
            spec["depends_on"] = [{"job": on}]
        return {"name": name, "command": "true", "schedules": [spec]}

    await put(cluster, job("a", None))
    await put(cluster, job("b", "a"))
    await put(cluster, job("c", "b"))
    status, body = await cluster.request("PUT", f"{JOBS}/a", json=job("a", "c"))
    assert status == 400, body
    assert body["error"]["field"] == "schedules.0.depends_on.0.job"
    assert "depends_on cycle: a → c → b → a" in body["error"]["message"], body
    status, body = await cluster.request("PUT", f"{JOBS}/self", json=job("self", "self"))
    assert status == 400 and "depends_on cycle: self → self" in body["error"]["message"], body
    _, got = await cluster.request("GET", f"{JOBS}/a")
    assert not got["schedules"][0].get("depends_on"), got  # unchanged
    # not_before must be HH:MM
    bad = {**job("d", "a")}
    bad["schedules"][0]["not_before"] = "6am"
    status, body = await cluster.request("PUT", f"{JOBS}/d", json=bad)
    assert status == 400 and body["error"]["field"] == "schedules.0.not_before", body


def _record(raw: bytes) -> dict[str, Any]:
    return dict(json.loads(raw))


@pytest.mark.timeout(90)
async def test_a_rerun_that_succeeds_releases_the_waiting_slot(cluster, etcd, keys, tmp_path):
    await cluster.start()
    marker = tmp_path / "fixed"
    first = at(3)
    await put(
        cluster,
        {"name": "load", "command": f"test -f {marker}", "schedules": [{"at": first}]},
    )
    await put(
        cluster,
        {
            "name": "report",
            "command": "true",
            "schedules": [
                {
                    "at": at(4),
                    "depends_on": [{"job": "load", "window": "10s"}],
                    "max_wait": "80s",
                }
            ],
        },
    )

    async def failed():
        runs = await runs_of(cluster, "load")
        return runs[0] if runs and runs[0]["status"] == "failed" else None

    bad = await wait_for(failed, 30, what="the upstream slot failed")

    async def waits_on_a_failure():
        slot = await slot_of(cluster, "report")
        if not slot or not slot.get("waiting_for"):
            return None
        dep = slot["waiting_for"]["depends_on"][0]
        return slot if dep["slots"]["failed"] == 1 else None

    slot = await wait_for(waits_on_a_failure, 30, what="report waits on a failed slot")
    assert slot["run"] is None and slot["outcome"] is None
    marker.write_text("")
    status, rerun = await cluster.request(
        "POST", f"/api/v1/projects/default/runs/{bad['id']}/rerun"
    )
    assert status == 201, rerun
    assert rerun["source"] == "rerun" and rerun["scheduled_at"] == bad["scheduled_at"]
    # the upstream slot now stands for the rerun
    _, page = await cluster.request("GET", f"{JOBS}/load/slots")
    assert page["slots"][0]["rerun"] == rerun["id"] and page["slots"][0]["run"] == bad["id"]

    async def released():
        slot = await slot_of(cluster, "report")
        return slot if slot and slot.get("run") else None

    slot = await wait_for(released, 30, what="the rerun released report")
    assert slot["outcome"] == "fired", slot
    dep = slot["waited"]["depends_on"][0]
    assert dep["met"] and dep["slots"]["succeeded"] == 1, dep
    # a run that is not finished, or not a slot's, cannot be rerun
    status, manual = await cluster.request("POST", f"{JOBS}/load/runs", json={})
    assert status == 201
    await wait_for(lambda: _finished(cluster, manual["id"]), 20, what="manual run ends")
    status, body = await cluster.request(
        "POST", f"/api/v1/projects/default/runs/{manual['id']}/rerun"
    )
    assert status == 409 and body["error"]["field"] == "run", body


async def _finished(cluster: Any, run_id: str) -> bool:
    _, run = await cluster.request("GET", f"/api/v1/projects/default/runs/{run_id}")
    return run["status"] in ("succeeded", "failed")


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_the_time_gate_holds_a_slot_until_its_minute(cluster):
    await cluster.start()
    now = datetime.now(UTC)
    gate = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if (gate - now).total_seconds() < 8:
        gate += timedelta(minutes=1)
    when = (gate - timedelta(seconds=4)).isoformat()
    job = {
        "name": "gated",
        "command": "true",
        "schedules": [{"at": when, "not_before": gate.strftime("%H:%M")}],
    }
    await put(cluster, job)

    async def waiting():
        slot = await slot_of(cluster, "gated")
        return slot if slot and slot.get("waiting") and slot["waiting_for"] else None

    slot = await wait_for(waiting, 75, what="the gated slot waits")
    assert slot["waiting_for"]["not_before"] == gate.isoformat()
    assert slot["waiting_for"]["gate_passed"] is False

    async def released():
        slot = await slot_of(cluster, "gated")
        return slot if slot and slot.get("run") else None

    slot = await wait_for(released, 30, what="released at its gate")
    assert datetime.fromisoformat(slot["released_at"]) >= gate
    assert slot["outcome"] == "fired"


WFS = "/api/v1/projects/default/workflows"


@pytest.mark.timeout(90)
async def test_a_workflow_slot_waits_on_a_job_and_a_job_on_the_workflow(cluster, etcd, keys):
    await cluster.start()
    await put(cluster, upstream("extract", "sleep 3"))
    when = at(5)
    wf = {
        "name": "etl",
        "tasks": [{"name": "load", "command": "true"}],
        "schedules": [{"at": when, "depends_on": [{"job": "extract", "window": "3s"}]}],
    }
    status, body = await cluster.request("PUT", f"{WFS}/etl", json=wf)
    assert status in (200, 201), body
    # a job downstream of the workflow; the workflow cannot then wait on that job (a cycle)
    report = {
        "name": "report",
        "command": "true",
        "schedules": [
            {"at": at(6), "depends_on": [{"workflow": "etl", "window": "5s"}], "max_wait": "60s"}
        ],
    }
    await put(cluster, report)
    looped = {**wf, "schedules": [{"at": when, "depends_on": [{"job": "report"}]}]}
    status, body = await cluster.request("PUT", f"{WFS}/etl", json=looped)
    assert status == 400, body
    assert "depends_on cycle: workflow:etl → report → workflow:etl" in body["error"]["message"]

    async def waiting():
        _, page = await cluster.request("GET", f"{WFS}/etl/slots")
        slot = page["slots"][0] if page["slots"] else None
        return slot if slot and slot.get("waiting_for") else None

    slot = await wait_for(waiting, 30, what="the workflow slot waits")
    assert slot["waiting_for"]["depends_on"][0]["upstream"] == "extract"
    assert (await etcd.range(keys.waitings("default", "@etl"))).kvs

    async def executed():
        _, page = await cluster.request("GET", f"{WFS}/etl/slots")
        slot = page["slots"][0] if page["slots"] else None
        return slot if slot and slot.get("execution") else None

    slot = await wait_for(executed, 30, what="the workflow slot released")
    _, ex = await cluster.request("GET", f"/api/v1/projects/default/executions/{slot['execution']}")
    assert ex["scheduled_at"] and ex["workflow"] == "etl"

    async def report_ran():
        s = await slot_of(cluster, "report")
        return s if s and s.get("run") else None

    s = await wait_for(report_ran, 40, what="report released once the workflow succeeded")
    dep = s["waited"]["depends_on"][0]
    assert dep["upstream"] == "workflow:etl" and dep["slots"]["succeeded"] == 1, dep


@pytest.mark.timeout(60)
async def test_a_slot_waiting_past_its_deadline_ends_deadline_missed_and_notifies(
    cluster, etcd, keys
):
    await allow_loopback(etcd, keys)
    await cluster.start()
    off = {**upstream("paused", "true"), "enabled": False}
    await put(cluster, off)
    async with Receiver() as hook:
        job = {
            "name": "late-report",
            "command": "true",
            "schedules": [{"at": at(2), "depends_on": [{"job": "paused", "window": "1d"}]}],
            "deadlines": {"start_within": 3},
            "notifications": [{"on": ["deadline_missed"], "webhook": {"url": hook.url}}],
        }
        await put(cluster, job)

        async def ended():
            slot = await slot_of(cluster, "late-report")
            return slot if slot and slot.get("outcome") else None

        slot = await wait_for(ended, 30, what="the waiting slot ends at its deadline")
        assert slot["outcome"] == "deadline_missed" and slot["run"] is None, slot
        assert slot["reason"] == "not started by its deadline: paused: upstream disabled", slot
        settled = datetime.fromisoformat(slot["settled_at"])
        assert settled >= datetime.fromisoformat(slot["tick"]) + timedelta(seconds=3)
        assert slot["waited"]["depends_on"][0]["note"] == "upstream disabled"
        delivered = await wait_for(lambda: hook.delivered(), 20, what="deadline_missed sent")
        _, body = delivered[0]
        assert body["event"] == "deadline_missed", body
        assert await runs_of(cluster, "late-report") == []
        assert not (await etcd.range(keys.waitings())).kvs
        assert (await etcd.get(keys.slot_alarm("default", "late-report"))) is not None


@pytest.mark.timeout(60)
async def test_over_the_waiting_quota_a_slot_ends_at_once(cluster, etcd, keys, monkeypatch):
    from cluster import depends_plan

    monkeypatch.setattr(depends_plan, "MAX_WAITING_PER_JOB", 2)
    await cluster.start()
    await put(cluster, {**upstream("stopped", "true"), "enabled": False})
    job = {
        "name": "eager",
        "command": "true",
        "schedules": [{"cron": "* * * * * *", "depends_on": [{"job": "stopped"}]}],
    }
    await put(cluster, job)

    async def over():
        _, page = await cluster.request("GET", f"{JOBS}/eager/slots")
        out = [s for s in page["slots"] if s["outcome"] == "skipped_waiting_quota"]
        return (page, out) if out else None

    page, out = await wait_for(over, 30, what="a slot over the waiting quota")
    await cluster.request("PATCH", f"{JOBS}/eager", json={"enabled": False})
    assert "2 slots of this job already wait on their upstreams" in out[0]["reason"], out[0]
    assert out[0]["run"] is None
    assert len((await etcd.range(keys.waitings("default", "eager"))).kvs) <= 2
    assert await runs_of(cluster, "eager") == []
