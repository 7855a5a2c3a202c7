"""#19 item 10: log followers were unlimited, a follower of a pending run read the run from etcd
5 times a second, and a follower that disconnected left a traceback in the node's log.

Real nodes and etcd: followers are capped per user and per node (429), a pending follower waits
on a watch of the run's key, and a disconnect ends the answer quietly.
"""

from __future__ import annotations

import asyncio

import aiohttp
from structlog.testing import capture_logs

from tests.conftest import api_headers, wait_for

BASE = "/api/v1/projects/p"
CHATTY = "for i in $(seq 1 600); do echo line $i; sleep 0.1; done"


async def _user(cluster, name: str, roles: dict[str, str]) -> str:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": name, "roles": roles}
    )
    assert status == 201, body
    status, body = await cluster.request("POST", f"/api/v1/users/{name}/tokens", json={})
    assert status == 201, body
    return body["token"]


async def _running(cluster, command: str = CHATTY, **job) -> str:
    status, body = await cluster.request(
        "PUT", f"{BASE}/jobs/chatty", json={"name": "chatty", "command": command, **job}
    )
    assert status in (200, 201), body
    status, run = await cluster.request("POST", f"{BASE}/jobs/chatty/runs", json={})
    assert status == 201, run
    return run["id"]


async def test_a_follower_that_disconnects_ends_quietly(cluster):
    node = await cluster.start(log_followers_per_user=1)
    run_id = await _running(cluster)
    url = cluster.url(node, f"{BASE}/runs/{run_id}/logs?follow=1")
    with capture_logs() as events:
        async with aiohttp.ClientSession(headers=api_headers()) as http:
            resp = await http.get(url)
            assert resp.status == 200
            await resp.content.readany()
            resp.close()  # the client goes away mid-stream

            async def slot_back() -> bool:  # the same user may follow again: the slot was freed
                async with http.get(url) as again:
                    if again.status != 200:
                        return False
                    await again.content.readany()
                    return True

            await wait_for(slot_back, 15, what="the follower slot to be released")
        await cluster.request("POST", f"{BASE}/runs/{run_id}/abort")
    bad = [e for e in events if e.get("log_level") in ("error", "critical") or e.get("exc_info")]
    assert bad == [], bad


async def test_followers_are_capped_per_user_and_per_node(cluster):
    node = await cluster.start(log_followers=3, log_followers_per_user=2)
    run_id = await _running(cluster)
    url = cluster.url(node, f"{BASE}/runs/{run_id}/logs?follow=1")
    viewer = await _user(cluster, "v", {"p": "viewer"})
    other = await _user(cluster, "w", {"p": "viewer"})
    held: list[aiohttp.ClientResponse] = []
    async with aiohttp.ClientSession() as http:
        try:
            for _ in range(2):
                held.append(await http.get(url, headers=api_headers()))
                assert held[-1].status == 200
            async with http.get(url, headers=api_headers()) as resp:
                assert resp.status == 429 and resp.headers["Retry-After"] == "5"
                assert "already follows 2" in (await resp.json())["error"]["message"]
            held.append(await http.get(url, headers=api_headers(viewer)))
            assert held[-1].status == 200  # another user: the third follower of the node
            async with http.get(url, headers=api_headers(other)) as resp:
                assert resp.status == 429
                assert "3 log followers" in (await resp.json())["error"]["message"]
            # reads that are not follows are not counted against followers
            async with http.get(url.replace("follow=1", "tail=1"), headers=api_headers(other)) as r:
                assert r.status == 200
        finally:
            for resp in held:
                resp.close()
    await cluster.request("POST", f"{BASE}/runs/{run_id}/abort")


async def test_a_pending_follower_waits_on_a_watch_not_by_polling(cluster):
    node = await cluster.start("n1")
    run_id = await _running(cluster, "echo started-on-x", target={"selector": "side=x"})
    assert node.store is not None
    reads = 0
    real = node.store.get_run_kv

    async def counting(project, run):
        nonlocal reads
        reads += 1
        return await real(project, run)

    node.store.get_run_kv = counting  # type: ignore[method-assign]
    url = cluster.url(node, f"{BASE}/runs/{run_id}/logs?follow=1")

    async def follow() -> str:
        async with aiohttp.ClientSession(headers=api_headers()) as http:
            async with http.get(url) as resp:
                assert resp.status == 200
                return await resp.text()

    task = asyncio.create_task(follow())
    # a measuring window, not a wait: the old follower read the run ~15 times in 3 s
    await asyncio.sleep(3)
    assert not task.done()
    assert reads <= 3, f"{reads} reads of the pending run in 3 s"
    # a node that matches the target starts the run: the watch wakes the follower
    await cluster.start("n2", properties={"side": "x"})
    text = await asyncio.wait_for(task, 30)
    assert "started-on-x" in text
