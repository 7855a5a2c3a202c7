"""A leader SIGKILLed while slots wait on upstreams (issue 24 item 1, D294), on real `cronmesh
node` processes: the next leader reads the waiting keys and goes on — the slot whose upstreams
are met is released once (one run, the one minted when its tick fired), the one whose upstream
never comes ends ``skipped_dependency`` at its ``max_wait``: nothing fires twice, nothing waits
forever. (The upstream runs on the node that survives: a run on the killed node is lost, which
is a failed upstream slot.)"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta

import pytest

from tests.chaos.harness import leader_of, wait_ready
from tests.conftest import api_session, wait_for

P = "/api/v1/projects/default"


async def request(http, method, url, **kw):
    async with http.request(method, url, **kw) as r:
        return r.status, await r.json()


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_leader_killed_while_slots_wait(procs, etcd, keys):
    first = procs.start("node-1")
    async with api_session() as http:
        await wait_ready(http, first)
        assert await wait_for(lambda: leader_of(http, [first]), 15, what="leader") == "node-1"
        second = procs.start("node-2", "--property", "role=worker")
        await wait_ready(http, second)
        api = second.url
        when = (datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)).isoformat()
        docs = [
            {
                "name": "up",
                "command": "sleep 4",
                "schedules": [{"cron": "*/2 * * * * *"}],
                "target": {"selector": "role=worker"},  # not on the leader that dies
            },
            {
                "name": "off",
                "command": "true",
                "enabled": False,
                "schedules": [{"cron": "*/2 * * * * *"}],
            },
            {
                "name": "met",
                "command": "true",
                "schedules": [
                    {"at": when, "depends_on": [{"job": "up", "window": "3s"}], "max_wait": "90s"}
                ],
            },
            {
                "name": "never",
                "command": "true",
                "schedules": [
                    {"at": when, "depends_on": [{"job": "off", "window": "3s"}], "max_wait": "20s"}
                ],
            },
        ]
        for doc in docs:
            status, body = await request(http, "PUT", f"{api}{P}/jobs/{doc['name']}", json=doc)
            assert status in (200, 201), body

        async def both_wait():
            res = await etcd.range(keys.waitings())
            return res.kvs if len(res.kvs) == 2 else None

        waiting = {
            kv.key: json.loads(kv.value) for kv in await wait_for(both_wait, 30, what="wait")
        }
        minted = {doc["tick_key"].split("/")[-2]: doc["run"]["id"] for doc in waiting.values()}
        first.signal(signal.SIGKILL)  # the leader dies with both slots waiting
        killed = datetime.now(UTC)

        async def new_leader():
            got = await leader_of(http, [second])
            return got if got == "node-2" else None

        await wait_for(new_leader, 30, what="node-2 leads")

        async def settled(name):
            _, page = await request(http, "GET", f"{api}{P}/jobs/{name}/slots")
            slot = page["slots"][0] if page["slots"] else None
            return slot if slot and slot["outcome"] else None

        met = await wait_for(lambda: settled("met"), 60, what="met released")
        assert met["outcome"] == "fired" and met["run"] == minted["met"], met
        assert datetime.fromisoformat(met["released_at"]) > killed  # by the new leader
        never = await wait_for(lambda: settled("never"), 60, what="never ended")
        assert never["outcome"] == "skipped_dependency" and never["run"] is None, never
        assert "upstream disabled" in json.dumps(never["waited"]), never
        assert not (await etcd.range(keys.waitings())).kvs
        # exactly one run of the released slot, none of the other
        for name, want in (("met", [minted["met"]]), ("never", [])):
            _, page = await request(http, "GET", f"{api}{P}/runs?job={name}")
            assert [r["id"] for r in page["runs"]] == want, page
        ticks = await etcd.range(keys.ticks("default", "met"))
        assert len(ticks.kvs) == 1
