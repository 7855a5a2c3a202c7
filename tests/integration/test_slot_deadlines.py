"""Slot deadlines end to end (issue 21 item 1): a slot whose run never starts (no node matches
its target) still ends ``deadline_missed`` in the tick log, the metrics and a webhook; a slot that
runs in time ends ``fired`` and counts in "ran N of the last M slots"; freshness of a job run by
triggers (``expected_every``) goes stale and recovers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from tests.api_helpers import JOBS
from tests.conftest import wait_for
from tests.integration.test_notifications import Receiver, allow_loopback


def slot_counts(text: str, job: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "cronmesh_slot_outcomes_total" and s.labels["job"] == job:
                out[s.labels["outcome"]] = s.value
    return out


async def test_a_run_that_never_starts_still_misses_its_deadline(cluster, etcd, keys):
    await allow_loopback(etcd, keys)
    await cluster.start()
    async with Receiver() as hook:
        job = {
            "name": "stranded",
            "command": "true",
            "schedules": [{"cron": "*/3 * * * * *"}],
            "target": {"selector": "role=nowhere"},  # no node fits: its runs stay pending
            "deadlines": {"start_within": 1},
            "notifications": [{"on": ["deadline_missed"], "webhook": {"url": hook.url}}],
        }
        status, body = await cluster.request("POST", JOBS, json=job)
        assert status == 201, body

        async def missed():
            _, page = await cluster.request("GET", f"{JOBS}/stranded/slots")
            hits = [s for s in page["slots"] if s["outcome"] == "deadline_missed"]
            return (page, hits[-1]) if hits else None

        page, slot = await wait_for(missed, 30, what="a deadline_missed slot")
        assert slot["reason"].startswith("not started within 1 s: run "), slot
        assert "is pending" in slot["reason"] and slot["run"] in slot["reason"]
        assert page["summary"]["ran"] == 0 and page["summary"]["slots"] >= 1
        assert slot in page["late"]
        # the ticks view shows the same outcome
        _, ticks = await cluster.request("GET", f"{JOBS}/stranded/ticks")
        assert any(t.get("outcome") == "deadline_missed" for t in ticks["ticks"])
        # the run itself is still pending: the slot was settled from its instant, not the run
        _, run = await cluster.request("GET", f"/api/v1/projects/default/runs/{slot['run']}")
        assert run["status"] == "pending"

        async def counted():
            _, text = await cluster.request("GET", "/metrics")
            return slot_counts(text, "stranded").get("deadline_missed", 0) >= 1

        await wait_for(counted, 10, what="cronmesh_slot_outcomes_total counted")
        delivered = await wait_for(lambda: hook.delivered(), 30, what="deadline_missed webhook")
        headers, body = delivered[0]
        assert headers["X-Cronmesh-Event"] == "deadline_missed"
        assert body["event"] == "deadline_missed" and body["job"] == "stranded"
        assert body["slot"]["outcome"] == "deadline_missed" and body["slot"]["run"] == slot["run"]
        assert headers["X-Cronmesh-Delivery"].startswith("slot-default/stranded/")
        # one delivery per slot: ids never repeat
        await cluster.request("PATCH", f"{JOBS}/stranded", json={"enabled": False})
        ids = [h["X-Cronmesh-Delivery"] for h, _ in hook.delivered()]
        assert len(ids) == len(set(ids))


async def test_slots_that_run_in_time_are_fired_and_counted(cluster):
    await cluster.start()
    job = {
        "name": "punctual",
        "command": "true",
        "schedules": [{"cron": "* * * * * *", "deadlines": {"succeed_within": 20}}],
        "deadlines": {"start_within": 10},
    }
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body

    async def three_fired():
        _, page = await cluster.request("GET", f"{JOBS}/punctual/slots")
        return page if page["summary"]["outcomes"].get("fired", 0) >= 3 else None

    page = await wait_for(three_fired, 30, what="three fired slots")
    await cluster.request("PATCH", f"{JOBS}/punctual", json={"enabled": False})
    fired = [s for s in page["slots"] if s["outcome"] == "fired"]
    assert all(s["reason"] == "succeeded within its deadline" for s in fired)
    assert all(0 <= s["lateness"] < 10 for s in fired)
    assert page["summary"]["ran"] == page["summary"]["outcomes"]["fired"]
    assert page["summary"]["outcomes"].get("deadline_missed", 0) == 0
    # paging: the next page starts before the oldest slot of this one
    _, small = await cluster.request("GET", f"{JOBS}/punctual/slots?limit=1")
    assert len(small["slots"]) == 1 and small["next"] == small["slots"][0]["name"]
    _, older = await cluster.request("GET", f"{JOBS}/punctual/slots?limit=1&before={small['next']}")
    assert older["slots"][0]["tick"] < small["slots"][0]["tick"]
    status, err = await cluster.request("GET", f"{JOBS}/punctual/slots?before=x")
    assert status == 400 and err["error"]["field"] == "before"
    # a job without deadlines settles its slots when they fire
    await cluster.request(
        "POST",
        JOBS,
        json={"name": "plain", "command": "true", "schedules": [{"cron": "* * * * * *"}]},
    )

    async def plain_fired():
        _, page = await cluster.request("GET", f"{JOBS}/plain/slots")
        return page if page["slots"] and page["slots"][-1]["outcome"] == "fired" else None

    plain = await wait_for(plain_fired, 20, what="plain slot fired")
    assert plain["summary"]["open"] == 0
    await cluster.request("PATCH", f"{JOBS}/plain", json={"enabled": False})


async def test_bad_deadlines_are_refused_naming_the_field(cluster):
    await cluster.start()
    for doc, field in [
        ({"deadlines": {"start_within": "soon"}}, "deadlines.start_within"),
        ({"deadlines": {"start_within": 60, "succeed_within": 5}}, "deadlines.succeed_within"),
        ({"expected_every": 5}, "expected_every"),
        ({"schedules": [{"cron": "* * * * *", "deadlines": {"x": 1}}]}, "schedules.0.deadlines.x"),
    ]:
        status, body = await cluster.request(
            "POST", JOBS, json={"name": "bad", "command": "true", **doc}
        )
        assert status == 400 and body["error"]["field"] == field, body
    status, _ = await cluster.request("GET", f"{JOBS}/bad")
    assert status == 404  # nothing half-written


async def test_freshness_goes_stale_then_recovers(cluster, etcd, keys):
    await allow_loopback(etcd, keys)
    await cluster.start(public_url="https://cron.example.com")
    async with Receiver() as hook:
        job = {
            "name": "fed",
            "command": "true",
            "expected_every": 60,
            "notifications": [
                {"on": ["deadline_missed", "recovered"], "webhook": {"url": hook.url}}
            ],
        }
        status, body = await cluster.request("POST", JOBS, json=job)
        assert status == 201, body
        # the first period is open: move its deadline into the past (as 60 s passing would)
        prefix = keys.open_slots("default", "fed")

        async def opened():
            res = await etcd.range(prefix)
            return res.kvs[0] if res.kvs else None

        kv = await wait_for(opened, 10, what="freshness period opened")
        doc = json.loads(kv.value)
        assert doc["every"] == 60 and doc["stale"] is False
        # 61 s earlier: due a second ago, and no success since the period began
        for field in ("tick", "since"):
            doc[field] = (datetime.fromisoformat(doc[field]) - timedelta(seconds=61)).isoformat()
        await etcd.put(kv.key, json.dumps(doc))

        async def stale():
            _, page = await cluster.request("GET", f"{JOBS}/fed/slots")
            hits = [s for s in page["slots"] if s["outcome"] == "deadline_missed"]
            return hits[0] if hits else None

        slot = await wait_for(stale, 20, what="stale slot recorded")
        assert "no successful run within 60 s" in slot["reason"]
        await wait_for(lambda: hook.delivered(), 20, what="deadline_missed sent")
        _, run = await cluster.request("POST", f"{JOBS}/fed/runs", json={})
        await wait_for(lambda: len(hook.delivered()) >= 2, 30, what="recovered sent")
        events = [h["X-Cronmesh-Event"] for h, _ in hook.delivered()]
        assert events == ["deadline_missed", "recovered"], events
        stale_body = hook.delivered()[0][1]
        assert stale_body["run"]["id"] is None  # no run: the message links to the job's page
        assert stale_body["links"] == {
            "job": "https://cron.example.com/ui/#/jobs/fed?project=default"
        }
        res = await etcd.range(prefix)
        assert len(res.kvs) == 1  # the next period is open, not stale
        assert json.loads(res.kvs[0].value)["stale"] is False


async def test_a_workflow_slot_misses_its_deadline_while_a_task_waits(cluster):
    await cluster.start()
    wf = {
        "tasks": [{"name": "t", "command": "true", "target": {"selector": "role=nowhere"}}],
        "schedules": [{"cron": "*/2 * * * * *"}],
        "deadlines": {"succeed_within": 1},
    }
    status, body = await cluster.request("PUT", "/api/v1/projects/default/workflows/stuck", json=wf)
    assert status == 201, body
    url = "/api/v1/projects/default/workflows/stuck/slots"

    async def missed():
        _, page = await cluster.request("GET", url)
        return page if page["late"] else None

    page = await wait_for(missed, 30, what="a workflow slot missed its deadline")
    await cluster.request(
        "PUT", "/api/v1/projects/default/workflows/stuck", json={**wf, "enabled": False}
    )
    slot = page["late"][0]
    assert slot["outcome"] == "deadline_missed" and slot["execution"], slot
    assert slot["reason"].startswith("not succeeded within 1 s: run " + slot["execution"]), slot
    status, _ = await cluster.request("GET", "/api/v1/projects/default/workflows/nope/slots")
    assert status == 404


async def test_a_slot_skipped_by_overlap_is_recorded_and_notified(cluster, etcd, keys):
    await allow_loopback(etcd, keys)
    await cluster.start()
    async with Receiver() as hook:
        job = {
            "name": "busy",
            "command": "sleep 30",
            "kill_grace": 0.5,
            "schedules": [{"cron": "* * * * * *"}],
            "overlap": "forbid",
            "notifications": [{"on": ["skipped"], "webhook": {"url": hook.url}}],
        }
        status, body = await cluster.request("POST", JOBS, json=job)
        assert status == 201, body

        async def skipped():
            _, page = await cluster.request("GET", f"{JOBS}/busy/slots")
            hits = [s for s in page["slots"] if s["outcome"] == "skipped_overlap"]
            return (page, hits[-1]) if hits else None

        page, slot = await wait_for(skipped, 30, what="a slot skipped by overlap")
        assert "overlap policy 'forbid'" in slot["reason"], slot
        assert page["summary"]["ran"] >= 1 and slot not in page["late"]
        delivered = await wait_for(lambda: hook.delivered(), 30, what="skipped webhook")
        headers, body = delivered[0]
        assert headers["X-Cronmesh-Event"] == "skipped" and body["run"]["status"] == "skipped"
        await cluster.request("PATCH", f"{JOBS}/busy", json={"enabled": False})
        _, runs = await cluster.request("GET", "/api/v1/projects/default/runs?job=busy")
        for run in runs["runs"]:
            if run["status"] in ("pending", "running"):
                await cluster.request("POST", f"/api/v1/projects/default/runs/{run['id']}/abort")


async def test_the_first_good_slot_after_a_missed_deadline_is_recovered(cluster, etcd, keys):
    await allow_loopback(etcd, keys)
    await cluster.start()
    async with Receiver() as hook:
        job = {
            "name": "mended",
            "command": "true",
            "schedules": [{"cron": "*/2 * * * * *"}],
            "target": {"selector": "role=nowhere"},
            "deadlines": {"start_within": 1, "succeed_within": 10},
            "notifications": [
                {"on": ["deadline_missed", "recovered"], "webhook": {"url": hook.url}}
            ],
        }
        assert (await cluster.request("POST", JOBS, json=job))[0] == 201
        await wait_for(lambda: hook.delivered(), 30, what="deadline_missed")
        # the operator fixes the target: the next slot runs, and its success is the recovery
        await cluster.request("PATCH", f"{JOBS}/mended", json={"target": {}})

        def recovered():
            return [b for h, b in hook.delivered() if h["X-Cronmesh-Event"] == "recovered"]

        got = await wait_for(recovered, 30, what="recovered")
        await cluster.request("PATCH", f"{JOBS}/mended", json={"enabled": False})
        assert len(got) == 1 and got[0]["slot"]["outcome"] == "fired"
        _, page = await cluster.request("GET", f"{JOBS}/mended/slots")
        fired = [s for s in page["slots"] if s["outcome"] == "fired"]
        assert fired and fired[-1]["reason"] == "succeeded within its deadline"
        assert not (await etcd.range(keys.slot_alarm("default", "mended"))).kvs
