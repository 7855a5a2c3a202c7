"""A leader SIGKILLed while a slot's deadline is open: the next leader re-derives the open slot
from etcd and settles it once (one outcome, one notification), on real `cronmesh node`
processes (D230)."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta

import pytest

from tests.chaos.harness import leader_of, wait_ready
from tests.conftest import api_session, wait_for
from tests.integration.test_notifications import Receiver, allow_loopback
from tests.integration.test_slot_deadlines import slot_counts

P = "/api/v1/projects/default"


async def request(http, method, url, **kw):
    async with http.request(method, url, **kw) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_leader_killed_while_a_deadline_is_open_one_outcome(procs, etcd, keys):
    await allow_loopback(etcd, keys)
    first = procs.start("node-1")
    async with api_session() as http, Receiver() as hook:
        await wait_ready(http, first)
        assert await wait_for(lambda: leader_of(http, [first]), 15, what="leader") == "node-1"
        second = procs.start("node-2")
        await wait_ready(http, second)
        api = second.url
        at = datetime.now(UTC) + timedelta(seconds=2)
        job = {
            "name": "orphan",
            "command": "true",
            "schedules": [{"at": at.isoformat()}],
            "target": {"selector": "role=nowhere"},  # never starts
            "deadlines": {"start_within": 8},
            "notifications": [{"on": ["deadline_missed"], "webhook": {"url": hook.url}}],
        }
        status, body = await request(http, "POST", f"{api}{P}/jobs", json=job)
        assert status == 201, body

        async def open_slot():
            _, page = await request(http, "GET", f"{api}{P}/jobs/orphan/slots")
            return page if page["summary"]["open"] == 1 else None

        await wait_for(open_slot, 20, what="the slot is open")
        assert (await etcd.range(keys.open_slots("default", "orphan"))).kvs
        first.signal(signal.SIGKILL)  # the leader dies with the deadline open

        async def new_leader():
            got = await leader_of(http, [second])
            return got if got == "node-2" else None

        await wait_for(new_leader, 30, what="node-2 leads")

        async def settled():
            _, page = await request(http, "GET", f"{api}{P}/jobs/orphan/slots")
            return page if page["summary"]["open"] == 0 and page["slots"] else None

        page = await wait_for(settled, 40, what="the slot settled by the new leader")
        assert len(page["slots"]) == 1
        slot = page["slots"][0]
        assert slot["outcome"] == "deadline_missed", slot
        assert slot["reason"].startswith("not started within 8 s: run "), slot
        # settled at its deadline (never before it), by the new leader
        settled_at = datetime.fromisoformat(slot["settled_at"])
        assert settled_at >= datetime.fromisoformat(slot["tick"]) + timedelta(seconds=8)
        assert not (await etcd.range(keys.open_slots("default", "orphan"))).kvs
        await wait_for(lambda: hook.delivered(), 30, what="deadline_missed delivered")
        _, text = await request(http, "GET", f"{api}/metrics")
        assert slot_counts(text, "orphan") == {"deadline_missed": 1.0}
        ticks = await etcd.range(keys.ticks("default", "orphan"))
        assert len(ticks.kvs) == 1
        assert json.loads(ticks.kvs[0].value)["outcome"] == "deadline_missed"
        assert not (await etcd.range(keys.slot_outbox())).kvs  # delivered, then deleted
        ids = {h["X-Cronmesh-Delivery"] for h, _ in hook.delivered()}
        assert len(ids) == 1
