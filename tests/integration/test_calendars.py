"""Calendars, blackout windows and the freeze against a real etcd and real nodes (issue 21):
the API (validation naming the field, references, 409 on a calendar in use, the freeze in
/status), and on `cronmesh node` processes a skip window that records its slots and runs
nothing, and a defer window that yields exactly one run at its end, across a leader's death."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from nodes.leader.rulecache import RuleCache
from tests.chaos.harness import leader_of, wait_ready
from tests.conftest import api_session, run_cli, wait_for

P = "/api/v1/projects/default"


async def test_calendar_and_window_api(cluster):
    await cluster.start()
    req = cluster.request
    # a calendar: unknown country / subdivision name the field
    status, body = await req("PUT", f"{P}/calendars/hol", json={"holidays": [{"country": "XX"}]})
    assert status == 400 and body["error"]["field"] == "holidays.0.country", body
    status, body = await req(
        "PUT", f"{P}/calendars/hol", json={"holidays": [{"country": "US", "subdivision": "ZZ"}]}
    )
    assert status == 400 and body["error"]["field"] == "holidays.0.subdivision", body
    status, body = await req(
        "PUT", f"{P}/calendars/hol", json={"holidays": [{"country": "US", "subdivision": "CA"}]}
    )
    assert status == 201 and body["scope"] == "default" and body["updated_by"] == "admin", body
    # a project's first calendar makes the project, as its first job would (so deleting the
    # project removes its calendars)
    status, body = await req("PUT", "/api/v1/projects/fresh/calendars/c", json={"dates": []})
    assert status == 400 and "holidays, dates or business_days" in body["error"]["message"]
    status, body = await req(
        "PUT", "/api/v1/projects/fresh/calendars/c", json={"dates": ["2030-01-01"]}
    )
    assert status == 201, body
    status, body = await req("GET", "/api/v1/projects")
    assert "fresh" in str(body), body
    status, body = await req("PUT", "/api/v1/calendars/bd1", json={"business_days": {"nth": 1}})
    assert status == 201 and body["scope"] == "*", body
    status, body = await req("PUT", f"{P}/calendars/hol", json={"name": "other", "dates": []})
    assert status == 400 and body["error"]["field"] == "name", body
    # a job naming an unknown calendar: 400 naming the reference; known ones (project, cluster)
    job = {
        "name": "j",
        "command": "true",
        "schedules": [
            {"cron": "0 9 * * *", "calendar": {"skip": ["hol"], "only": ["bd1", "nope"]}}
        ],
    }
    status, body = await req("PUT", f"{P}/jobs/j", json=job)
    assert status == 400 and body["error"]["field"] == "schedules.0.calendar.only.1", body
    job["schedules"][0]["calendar"]["only"] = ["bd1"]
    status, body = await req("PUT", f"{P}/jobs/j", json=job)
    assert status == 201, body
    # deleting a calendar in use: 409 naming the job (project and cluster alike)
    for path in (f"{P}/calendars/hol", "/api/v1/calendars/bd1"):
        status, body = await req("DELETE", path)
        assert status == 409 and "default/j" in body["error"]["message"], body
    # the job's next fire times say what the calendars would make of them
    today = datetime.now(UTC).date()
    days = [(today + timedelta(days=i)).isoformat() for i in range(3)]
    assert (await req("PUT", f"{P}/calendars/soon", json={"dates": days}))[0] == 201
    doc = {
        "name": "noon",
        "command": "true",
        "schedules": [{"cron": "0 12 * * *", "calendar": {"skip": ["soon"]}}],
    }
    assert (await req("PUT", f"{P}/jobs/noon", json=doc))[0] == 201
    status, ticks = await req("GET", f"{P}/jobs/noon/ticks")
    first = ticks["next"][0]
    assert (first["outcome"], first["reason"]) == ("skip", "skipped_calendar"), ticks
    assert ticks["next"][3]["outcome"] == "fire", ticks
    status, _ = await req("DELETE", f"{P}/jobs/j")
    assert status == 204
    assert (await req("DELETE", f"{P}/calendars/hol"))[0] == 204
    assert (await req("DELETE", f"{P}/calendars/hol"))[0] == 404
    # windows: nonsense refused naming the field
    for doc, field in (
        ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
        ({"cron": "0 22 * * FRI", "duration": "8d"}, "duration"),
        ({"cron": "0 22 * * FRI", "duration": "2h", "action": "later"}, "action"),
        ({"cron": "0 22 * * FRI", "duration": "2h", "timezone": "Mars/Olympus"}, "timezone"),
    ):
        status, body = await req("PUT", f"{P}/blackouts/w", json=doc)
        assert status == 400 and body["error"]["field"] == field, (doc, body)
    # paged lists
    for i in range(3):
        doc = {"cron": "0 22 * * FRI", "duration": "56h", "action": "defer", "tags": ["db"]}
        status, body = await req("PUT", f"{P}/blackouts/w{i}", json=doc)
        assert status == 201, body
    status, page = await req("GET", f"{P}/blackouts?limit=2")
    assert [w["name"] for w in page["blackouts"]] == ["w0", "w1"] and page["next"] == "w1"
    status, page = await req("GET", f"{P}/blackouts?limit=2&after=w1")
    assert [w["name"] for w in page["blackouts"]] == ["w2"] and page["next"] is None
    # the freeze: a note is required; shown in /status
    status, body = await req("PUT", "/api/v1/freeze", json={"note": ""})
    assert status == 400 and body["error"]["field"] == "note", body
    status, body = await req("PUT", "/api/v1/freeze", json={"note": "release 4.2"})
    assert status == 200 and body["frozen"] and body["by"] == "admin", body
    status, body = await req("GET", "/status")
    assert body["freeze"]["note"] == "release 4.2", body
    status, body = await req("DELETE", "/api/v1/freeze")
    assert status == 200 and not body["frozen"]
    status, body = await req("GET", "/status")
    assert body["freeze"] is None


async def _get(http, url):
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
        return r.status, await r.json()


async def _put(http, url, doc):
    async with http.put(url, json=doc, timeout=aiohttp.ClientTimeout(total=10)) as r:
        body = await r.json()
        assert r.status in (200, 201), body
        return body


@pytest.mark.slow
async def test_blackout_skip_and_defer_on_real_nodes(procs):
    nodes = [procs.start(f"cal-{i}", lease_ttl=2) for i in range(2)]
    async with api_session() as http:
        for n in nodes:
            await wait_ready(http, n)
        url = nodes[0].url
        now = datetime.now(UTC).replace(microsecond=0)
        skip_from, skip_to = now + timedelta(seconds=4), now + timedelta(seconds=10)
        defer_from, defer_to = now + timedelta(seconds=4), now + timedelta(seconds=16)
        await _put(
            http,
            f"{url}{P}/blackouts/quiet",
            {
                "start": skip_from.isoformat(),
                "end": skip_to.isoformat(),
                "jobs": ["skipper"],
            },
        )
        await _put(
            http,
            f"{url}{P}/blackouts/later",
            {
                "start": defer_from.isoformat(),
                "end": defer_to.isoformat(),
                "action": "defer",
                "tags": ["deferrable"],
            },
        )
        every2 = [{"cron": "*/2 * * * * *"}]
        await _put(
            http,
            f"{url}{P}/jobs/skipper",
            {"name": "skipper", "command": "true", "schedules": every2},
        )
        await _put(
            http,
            f"{url}{P}/jobs/deferer",
            {
                "name": "deferer",
                "command": "true",
                "schedules": every2,
                "tags": ["deferrable"],
            },
        )

        # the leader dies inside the defer window: its successor still gives ONE run at its end.
        # "Inside" = once the leader has recorded a slot of each window (a deferred tick of
        # deferer, a skipped one of skipper), not after a guessed sleep.
        async def fates(job: str, fate: str) -> list[dict]:
            _, ticks = await _get(http, f"{url}{P}/jobs/{job}/ticks?limit=200")
            return [t for t in ticks["ticks"] if t["fate"] == fate]

        async def both_windows_entered() -> bool:
            return bool(await fates("deferer", "deferred")) and bool(
                await fates("skipper", "skipped_blackout")
            )

        await wait_for(both_windows_entered, 30, 0.2, what="a deferred and a skipped slot")
        leader = await wait_for(lambda: leader_of(http, nodes), 10, what="leader")
        victim = next(n for n in nodes if n.node_id == leader)
        victim.signal(signal.SIGKILL)
        await asyncio.to_thread(victim.proc.wait, 20)
        other = next(n for n in nodes if n is not victim)
        url = other.url

        async def runs_of(job):
            _, body = await _get(http, f"{url}{P}/runs?job={job}&limit=500")
            return body["runs"]

        async def deferred_ran():
            runs = await runs_of("deferer")
            after = [
                r
                for r in runs
                if r["scheduled_at"]
                and datetime.fromisoformat(r["scheduled_at"]) >= defer_to + timedelta(seconds=2)
            ]
            return runs if after else None

        runs = await wait_for(deferred_ran, 60, what="runs after the defer window")
        inside = [
            r for r in runs if defer_from <= datetime.fromisoformat(r["scheduled_at"]) < defer_to
        ]
        assert inside == [], inside
        at_end = [r for r in runs if datetime.fromisoformat(r["scheduled_at"]) == defer_to]
        # the deferred run, and no second one for the schedule's own slot at that instant
        assert len(at_end) == 1, at_end
        _, ticks = await _get(http, f"{url}{P}/jobs/deferer/ticks?limit=200")
        deferred = [t for t in ticks["ticks"] if t["fate"] == "deferred"]
        assert deferred and all(t["deferred_to"] == defer_to.isoformat() for t in deferred)
        assert all(defer_from <= datetime.fromisoformat(t["tick"]) < defer_to for t in deferred)

        skipped_runs = [
            r
            for r in await runs_of("skipper")
            if skip_from <= datetime.fromisoformat(r["scheduled_at"]) < skip_to
        ]
        assert skipped_runs == []
        _, ticks = await _get(http, f"{url}{P}/jobs/skipper/ticks?limit=200")
        skipped = sorted(
            datetime.fromisoformat(t["tick"])
            for t in ticks["ticks"]
            if t["fate"] == "skipped_blackout"
        )
        # every slot inside the window that a leader handled is recorded (the ones the dead
        # leader never planned were missed in its outage: recorded as missed, not as runs)
        assert skipped and all(skip_from <= t < skip_to for t in skipped), skipped
        assert all(
            "quiet" in t["reason"] for t in ticks["ticks"] if t["fate"] == "skipped_blackout"
        )


async def test_plan_api(cluster):
    await cluster.start()
    req = cluster.request
    for project in ("default", "other"):
        for i in range(5):
            doc = {"name": f"j{i}", "command": "true", "schedules": [{"cron": "0 * * * *"}]}
            status, body = await req("PUT", f"/api/v1/projects/{project}/jobs/j{i}", json=doc)
            assert status == 201, body
    await req("PUT", f"{P}/calendars/hol", json={"dates": ["2030-01-01"]})
    doc = {
        "name": "cal",
        "command": "true",
        "schedules": [{"cron": "0 9 * * *", "calendar": {"skip": ["hol"]}}],
    }
    assert (await req("PUT", f"{P}/jobs/cal", json=doc))[0] == 201
    for query, field in (
        ("from=yesterday", "from"),
        ("from=2030-01-01T00:00:00", "from"),  # no offset: not an instant
        ("from=2030-01-01T00:00:00Z&to=2030-01-09T00:00:00Z", "to"),
        ("from=2030-01-01T00:00:00Z&to=2029-01-01T00:00:00Z", "to"),
        ("limit=0", "limit"),
    ):
        status, body = await req("GET", f"/api/v1/plan?{query}")
        assert status == 400 and body["error"]["field"] == field, (query, body)
    status, body = await req(
        "GET", "/api/v1/plan?from=2029-12-31T23:30:00Z&to=2030-01-01T09:30:00Z"
    )
    assert status == 200, body
    assert body["jobs"] == 11
    at_midnight = [w for w in body["warnings"] if w["at"] == "2030-01-01T00:00:00+00:00"]
    assert at_midnight and at_midnight[0]["jobs"] == 10 and at_midnight[0]["group"] == "*"
    assert body["starts_per_minute"]["*"]["2030-01-01T00:00:00+00:00"] == 10
    skipped = [s for s in body["slots"] if s["job"] == "cal"]
    assert [(s["outcome"], s["reason"]) for s in skipped] == [("skip", "skipped_calendar")]
    # a viewer of one project plans that project only
    status, body = await req(
        "POST", "/api/v1/users", json={"name": "v", "roles": {"other": "viewer"}}
    )
    assert status == 201, body
    status, body = await req("POST", "/api/v1/users/v/tokens", json={})
    headers = {"Authorization": f"Bearer {body['token']}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(cluster.url(None, "/api/v1/plan")) as r:
            body = await r.json()
            assert r.status == 200 and {s["project"] for s in body["slots"]} <= {"other"}
            assert body["jobs"] == 5
        async with http.get(cluster.url(None, "/api/v1/plan?project=default")) as r:
            assert r.status == 403


async def test_cli_calendar_blackout_freeze_plan(cluster, tmp_path):
    await cluster.start()
    api = cluster.url()
    docs = tmp_path / "cal.yaml"
    docs.write_text(
        "name: us-ca\nholidays: [{country: US, subdivision: CA}]\n---\n"
        "name: first-bd\nholidays: [{country: US}]\nbusiness_days: {nth: 1}\n"
    )

    def cli(*args: str) -> tuple[int, str, str]:
        return run_cli(api, *args)

    code, out, err = await asyncio.to_thread(cli, "calendar", "apply", "-f", str(docs))
    assert code == 0 and "first-bd applied" in out, err
    code, out, err = await asyncio.to_thread(cli, "calendar", "list")
    assert code == 0 and "business day #1" in out and "holidays US-CA" in out, (out, err)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nholidays: [{country: QQ}]\n")
    code, out, err = await asyncio.to_thread(cli, "calendar", "apply", "--cluster", "-f", str(bad))
    assert code == 1 and "holidays.0.country" in err, err
    win = tmp_path / "win.yaml"
    win.write_text("name: weekend\ncron: '0 22 * * FRI'\nduration: 56h\naction: defer\n")
    code, out, err = await asyncio.to_thread(cli, "blackout", "apply", "--cluster", "-f", str(win))
    assert code == 0, err
    code, out, err = await asyncio.to_thread(cli, "blackout", "list", "--cluster")
    assert "weekend" in out and "defer" in out, out
    code, out, err = await asyncio.to_thread(cli, "freeze", "--note", "release \x1b[2Jday")
    assert code == 0 and "frozen: release day" in out and "\x1b" not in out, (out, err)
    code, out, err = await asyncio.to_thread(cli, "status")
    assert "CLUSTER FROZEN: release" in out, out
    code, out, err = await asyncio.to_thread(cli, "plan", "--from", "yesterday")
    assert code == 1 and "field: from" in err, err
    code, out, err = await asyncio.to_thread(cli, "unfreeze")
    assert code == 0 and "not frozen" in out
    code, out, err = await asyncio.to_thread(cli, "plan", "--from", "2030-01-01T00:00:00Z")
    assert code == 0 and "0 job(s)" in out, (out, err)


@pytest.mark.parametrize("rule_watch", ["on_time", "late"])
async def test_freeze_skips_job_and_workflow_slots_and_unfreeze_resumes(
    cluster, etcd, keys, monkeypatch, rule_watch
):
    """The freeze holds slots of a job and a workflow written after it, and the unfreeze lets
    them fire. ``late``: the leader's rule watch never delivers (etcd orders the freeze's watch
    and the job's watch apart, so a job written after a freeze may reach the leader first):
    the tick transactions' guard on the rules marker alone must make it see both (D339)."""
    if rule_watch == "late":
        monkeypatch.setattr(RuleCache, "_changed", lambda self, ev=None: None)
    await cluster.start()
    req = cluster.request
    assert (await req("PUT", "/api/v1/freeze", json={"note": "migration"}))[0] == 200
    job = {"name": "tick", "command": "true", "schedules": [{"cron": "@every 1s"}]}
    wf = {
        "name": "wtick",
        "schedules": [{"cron": "@every 1s"}],
        "tasks": [{"name": "t", "command": "true"}],
    }
    assert (await req("PUT", f"{P}/jobs/tick", json=job))[0] == 201
    assert (await req("PUT", f"{P}/workflows/wtick", json=wf))[0] == 201

    async def frozen_slots():
        res = await etcd.range(keys.workflow_ticks("default", "wtick"))
        wf_ticks = [json.loads(kv.value) for kv in res.kvs]
        _, body = await req("GET", f"{P}/jobs/tick/ticks")
        if len(wf_ticks) >= 2 and len(body["ticks"]) >= 2:
            return wf_ticks, body["ticks"]
        return None

    wf_ticks, job_ticks = await wait_for(frozen_slots, 20, what="frozen slots recorded")
    assert all(t["fate"] == "skipped_freeze" and t["execution"] is None for t in wf_ticks)
    assert all("migration" in t["reason"] for t in wf_ticks)
    assert all(t["fate"] == "skipped_freeze" and t["run"] is None for t in job_ticks)
    _, runs = await req("GET", f"{P}/runs?job=tick")
    assert runs["runs"] == []
    _, execs = await req("GET", f"{P}/workflows/wtick/executions")
    assert execs["executions"] == []
    # unfrozen: both fire again
    assert (await req("DELETE", "/api/v1/freeze"))[0] == 200

    async def resumed():
        _, runs = await req("GET", f"{P}/runs?job=tick")
        _, execs = await req("GET", f"{P}/workflows/wtick/executions")
        return runs["runs"] and execs["executions"]

    await wait_for(resumed, 20, what="runs and executions after the unfreeze")
    for name in ("jobs/tick", "workflows/wtick"):
        doc = job if name.startswith("jobs") else wf
        await req("PUT", f"{P}/{name}", json={**doc, "enabled": False})
