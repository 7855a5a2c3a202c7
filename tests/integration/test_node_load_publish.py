"""The node-load publisher on a real etcd (D257): the record is bound to the node's lease, written
when the runs' usage moves and not when it does not, and gone with the lease."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from cluster.session import Session
from nodes.daemon.load import publish
from nodes.executor.cgroups import Layout
from tests.conftest import wait_for


async def test_published_when_the_runs_usage_moves_and_gone_with_the_lease(etcd, keys, tmp_path):
    subtree = tmp_path / "subtree"  # stands for the node's cgroup subtree: the files it reads
    subtree.mkdir()
    (subtree / "cpu.stat").write_text("usage_usec 0\n")
    (subtree / "memory.current").write_text("0\n")
    layout = Layout(mode="v2", kill="cgroup.kill", v2=str(subtree), limits={"memory": "v2"})
    session = await Session.open(etcd, 5)
    key = keys.node_load("n1")
    samples: list[datetime] = []  # the publisher reads its clock once per sample

    def clock() -> datetime:
        samples.append(datetime.now(UTC))
        return samples[-1]

    task = asyncio.create_task(publish(etcd, keys, "n1", session, layout, clock, every=0.2))
    try:

        async def record():
            kv = await etcd.get(key)
            return kv and (kv, json.loads(kv.value))

        kv, doc = await wait_for(record, 10, what="the first record")
        assert kv.lease == session.lease_id
        assert doc["runs_memory"] == 0 and doc["node_rss"] > 0
        first = kv.version
        # the runs' rate appears with the second sample; after that nothing moves: no writes
        await wait_for(
            lambda: record_field(etcd, key, "runs_cpu", lambda v: v == 0.0), 10, what="a rate"
        )
        settled = (await etcd.get(key)).version
        # seven more samples, none worth a write: the eighth clock read comes after the seventh
        # sample's write (if any) finished
        seen = len(samples)
        await wait_for(lambda: len(samples) >= seen + 8, 20, what="seven more samples")
        assert (await etcd.get(key)).version == settled, "idle samples were written"
        assert settled - first <= 1
        # a run takes 200 MiB: written at the next sample
        await asyncio.to_thread((subtree / "memory.current").write_text, f"{200 * 2**20}\n")
        await wait_for(
            lambda: record_field(etcd, key, "runs_memory", lambda v: v == 200 * 2**20),
            10,
            what="the new memory published",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()
    assert await etcd.get(key) is None  # went with the lease: a dead node shows no stale load


async def record_field(etcd, key, name, ok) -> bool:
    kv = await etcd.get(key)
    return kv is not None and ok(json.loads(kv.value).get(name))
