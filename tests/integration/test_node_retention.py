"""A node that is down is forgotten after `node_retention`, a live one never; `cronmesh nodes
forget` does it by hand and is refused (409) for a live node (issue #22 item 7, D255)."""

from __future__ import annotations

import asyncio
import json

from tests.conftest import run_cli, wait_for


async def listed(cluster) -> dict[str, bool]:
    status, body = await cluster.request("GET", "/api/v1/nodes")
    assert status == 200, body
    return {n["id"]: n["up"] for n in body["nodes"]}


async def test_down_nodes_are_forgotten_after_the_retention(cluster, etcd, keys):
    n1 = await cluster.start("n1", node_retention=2)
    await wait_for(lambda: n1.leading, 15, what="n1 leads")
    n2 = await cluster.start("n2", node_retention=2)
    # a node that died long ago: a record without stopped_at and no live key
    await etcd.put(keys.node_info("ghost"), json.dumps({"id": "ghost", "address": "10.0.0.9:1"}))
    await etcd.put(keys.node_state("ghost"), json.dumps({"admin": "enabled"}))
    # one an operator disabled, down for a month: kept, and kept disabled (D281)
    old = {"id": "off", "address": "10.0.0.8:1", "stopped_at": "2026-01-01T00:00:00+00:00"}
    await etcd.put(keys.node_info("off"), json.dumps(old))
    await etcd.put(keys.node_state("off"), json.dumps({"admin": "disabled"}))
    await cluster.request("POST", "/api/v1/nodes/n2/disable")
    await cluster.request("POST", "/api/v1/nodes/n2/enable")

    async def ghost_marked() -> bool:
        kv = await etcd.get(keys.node_info("ghost"))
        return kv is not None and "down_since" in json.loads(kv.value)

    await wait_for(ghost_marked, 30, what="the dead node's down_since written")
    assert (await listed(cluster))["n2"] is True  # up: kept, however long

    await cluster.stop(n2)
    assert (await listed(cluster))["n2"] is False  # listed down at first

    async def forgotten() -> bool:
        return set(await listed(cluster)) == {"n1", "off"}

    await wait_for(forgotten, 60, what="n2 and ghost forgotten")
    assert await etcd.get(keys.node_state("ghost")) is None  # its admin state went too
    assert await etcd.get(keys.node_state("n2")) is None
    # the disabled one is still listed, down and disabled, until an operator forgets it
    status, off = await cluster.request("GET", "/api/v1/nodes/off")
    assert status == 200 and off["up"] is False and off["state"] == "disabled", off
    assert json.loads((await etcd.get(keys.node_state("off"))).value)["admin"] == "disabled"
    status, _ = await cluster.request("DELETE", "/api/v1/nodes/off")
    assert status < 300 and set(await listed(cluster)) == {"n1"}


async def test_nodes_forget_by_hand_is_refused_for_a_live_node(cluster):
    await cluster.start("n1")
    n2 = await cluster.start("n2")
    url = cluster.url()
    code, _, err = await asyncio.to_thread(run_cli, url, "nodes", "forget", "n2")
    assert code == 1 and "is up; stop it before forgetting it" in err and "(field: node)" in err
    status, _ = await cluster.request("DELETE", "/api/v1/nodes/n2")
    assert status == 409
    await cluster.stop(n2)
    code, out, err = await asyncio.to_thread(run_cli, url, "nodes", "forget", "n2")
    assert code == 0 and "node n2: forgotten" in out, err
    assert set(await listed(cluster)) == {"n1"}
