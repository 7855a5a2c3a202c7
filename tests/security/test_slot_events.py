"""Slot events (D232) are a new way for the leader to send webhooks: one not tied to a run, sent
by the slot watcher. They go through the same guard as run events: a rule aimed at an inside
address (allowed when written, then no longer) is refused at send time, never reaches the inside
service, and the outbox entry is dropped rather than retried forever. A viewer of another project
cannot read a job's slots."""

from __future__ import annotations

import asyncio

from nodes import webhooks
from tests.api_helpers import JOBS
from tests.browser.conftest import make_user
from tests.conftest import api_headers, wait_for
from tests.security.test_webhook_ssrf import SETTINGS, Inside, counts


async def test_a_slot_event_cannot_reach_an_inside_address(cluster, etcd, keys):
    await cluster.start()
    async with Inside() as inner:
        url = f"http://127.0.0.1:{inner.port}/v3/maintenance/defragment"
        await cluster.request("PUT", SETTINGS, json={"allow": ["127.0.0.1/32"]})
        job = {
            "name": "lure",
            "command": "true",
            "schedules": [{"cron": "*/2 * * * * *"}],
            "target": {"selector": "role=nowhere"},
            "deadlines": {"start_within": 1},
            "notifications": [{"on": ["deadline_missed"], "webhook": {"url": url}}],
            "enabled": False,
        }
        status, body = await cluster.request("POST", JOBS, json=job)
        assert status == 201, body
        assert (await cluster.request("PUT", SETTINGS, json={"allow": []}))[0] == 200
        await asyncio.sleep(webhooks.GUARD_TTL)  # the leader's cached guard expires
        base = (await counts(cluster)).get(("webhook", "refused"), 0)
        await cluster.request("PATCH", f"{JOBS}/lure", json={"enabled": True})

        async def refused():
            return (await counts(cluster)).get(("webhook", "refused"), 0) >= base + 1

        await wait_for(refused, 30, what="the slot event's refusal counted")
        await cluster.request("PATCH", f"{JOBS}/lure", json={"enabled": False})

        async def outbox_empty():
            return not (await etcd.range(keys.slot_outbox())).kvs

        await wait_for(outbox_empty, 30, what="refused entries dropped, not kept for retries")
        assert inner.hits == []


async def test_a_viewer_of_another_project_cannot_read_slots(cluster):
    await cluster.start()
    status, _ = await cluster.request("POST", "/api/v1/projects", json={"name": "other"})
    assert status == 201
    await make_user(cluster, "olga", {"other": "viewer"})
    job = {"name": "secret-job", "command": "true", "deadlines": {"start_within": 5}}
    assert (await cluster.request("POST", JOBS, json=job))[0] == 201
    status, body = await cluster.request("POST", "/api/v1/users/olga/tokens", json={})
    assert status == 201, body
    headers = api_headers(body["token"])
    status, _ = await cluster.request("GET", "/api/v1/projects/other/jobs", headers=headers)
    assert status == 200  # her own project: fine
    for path in (f"{JOBS}/secret-job/slots", "/api/v1/projects/default/workflows/w/slots"):
        status, body = await cluster.request("GET", path, headers=headers)
        assert status in (401, 403), (path, status, body)
