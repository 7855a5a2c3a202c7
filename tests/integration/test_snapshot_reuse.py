"""Run records decoded on the per-run path, with real `cronmesh node` processes (D450).

A node that leads and works decodes no run record at all (its worker takes back what its
leader encoded, D352; every other watcher routes on the key). A node that did not write a queue
entry decodes it with its job's snapshot validated once per job version.

Two nodes; the job's runs go to no node (its selector matches none), so they stay queued and the
node that does not lead decodes every entry its leader wrote (D352 spares the leader's own
worker). Its ``cronmesh_run_snapshots`` says how: one snapshot validated per version of the job,
every other entry's reused. An edit of the job is a new snapshot, validated once again.
"""

from __future__ import annotations

from typing import Any

import pytest

from cluster.election import current_leader
from tests.chaos.harness import read_metric
from tests.conftest import api_session, wait_for

PROJECT = "/api/v1/projects/default"


async def queued(etcd: Any, keys: Any) -> int:
    return len((await etcd.range_all(keys.queue())).kvs)


@pytest.mark.timeout(120)
async def test_a_follower_validates_each_job_version_once(procs, etcd, keys):
    first = procs.start("node-1")
    await wait_for(lambda: current_leader(etcd, keys), 60, 0.1, "a leader")
    second = procs.start("node-2")
    leader = await current_leader(etcd, keys)
    follower = second if leader == first.node_id else first
    await wait_for(lambda: follower.started(), 60, 0.1, "the second node")

    async def snapshots(outcome: str) -> float:
        return await snapshot_metric(follower.url, outcome)

    spec = {"name": "nowhere", "command": "true", "schedules": [{"cron": "* * * * * *"}],
            "target": {"selector": "role=none"}}  # fmt: skip
    validated0, reused0 = await snapshots("validated"), await snapshots("reused")
    async with api_session() as http:
        async with http.put(f"{follower.url}{PROJECT}/jobs/nowhere", json=spec) as r:
            assert r.status in (200, 201), await r.text()
        await wait_for(lambda: _at_least(queued(etcd, keys), 4), 60, 0.2, "4 queued runs")
        # every entry is looked at (once) by the follower's worker
        seen = await wait_for(
            lambda: _reused_at_least(snapshots, reused0 + 3), 30, 0.2, "entries decoded"
        )
        assert await snapshots("validated") - validated0 == 1, seen  # one job version
        spec["description"] = "edited: a new snapshot"
        async with http.put(f"{follower.url}{PROJECT}/jobs/nowhere", json=spec) as r:
            assert r.status == 200, await r.text()
        # the leader's cache may still make a few runs of the old version (reused): the edited
        # version's first entry is validated once it comes, and its later ones are reused
        await wait_for(
            lambda: _at_least(snapshots("validated"), validated0 + 2), 60, 0.2, "the new version"
        )
        reused = await snapshots("reused")
        await wait_for(lambda: _reused_at_least(snapshots, reused + 2), 30, 0.2, "new entries")
        assert await snapshots("validated") - validated0 == 2  # the edited job's, once


async def snapshot_metric(url: str, outcome: str) -> float:
    """``cronmesh_run_snapshots{outcome}`` of the node at ``url``, read again while it answers
    503 (its etcd session is not up yet, or was lost and is coming back under load)."""

    async def read() -> list[float]:
        async with api_session() as http:
            labels = {"outcome": outcome}
            return [await read_metric(http, url, "cronmesh_run_snapshots", labels)]

    value: list[float] = await wait_for(read, 60, 0.2, f"{url}/metrics")
    return value[0]


async def _at_least(count: Any, n: float) -> bool:
    return await count >= n


async def _reused_at_least(read: Any, n: float) -> float | None:
    value: float = await read("reused")
    return value if value >= n else None


@pytest.mark.timeout(120)
async def test_a_node_that_leads_and_works_decodes_no_run_record(procs, etcd, keys):
    """The count of D450: on one node, a trivial run is created, claimed, run, finished, noted
    by the notifier and charged to history without its record ever being decoded."""
    node = procs.start("node-1")
    await wait_for(lambda: current_leader(etcd, keys), 60, 0.1, "a leader")
    await wait_for(lambda: node.started(), 60, 0.1, "the node")
    spec = {"name": "often", "command": "true", "schedules": [{"cron": "* * * * * *"}]}

    async def finished() -> int:
        runs = (await etcd.range_all(keys.job_runs("default", "often"))).kvs
        return sum(1 for kv in runs if kv.value == b"succeeded")

    async with api_session() as http:
        async with http.put(f"{node.url}{PROJECT}/jobs/often", json=spec) as r:
            assert r.status in (200, 201), await r.text()
        await wait_for(lambda: _at_least(finished(), 5), 60, 0.2, "5 finished runs")
        for outcome in ("validated", "reused"):
            assert await snapshot_metric(node.url, outcome) == 0
