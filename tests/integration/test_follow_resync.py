"""The non-leader caches after a watch compaction (issue #20, D213): the worker's queue and
controls and the placement view read their prefix again and drop what was deleted meanwhile; the
notifier, which caches nothing, goes on from now and counts what it dropped.

Real etcd of the test's own (it compacts the whole keyspace, which must not reach other tests'
watches). Each cache's first read of its prefix is made stale on purpose: right after it, a key
is deleted, another write follows and the history is compacted past the read, so the watch that
follows the read starts on a compacted revision and only the resync can see the deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.election import Election
from cluster.etcd import Etcd, Range
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.session import Session
from cluster.store import Store
from logstore.service import build_logs
from nodes import metrics
from nodes.config import NodeConfig
from nodes.devtools.embedded import EtcdProcess
from nodes.leader.notifier import Notifier
from nodes.worker.cluster_view import ClusterView
from nodes.worker.worker import Worker
from tests.conftest import wait_for
from tests.integration.test_watch_resync import compact


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def own_etcd(tmp_path: Path) -> AsyncIterator[tuple[EtcdProcess, Etcd]]:
    server = EtcdProcess(tmp_path / "etcd").start()
    client = Etcd([server.endpoint])
    await client.connect()
    try:
        yield server, client
    finally:
        await client.close()
        server.stop()


def stale_first_read(
    server: EtcdProcess, etcd: Etcd, doomed: dict[str, str]
) -> Callable[[], Awaitable[None]]:
    """Make the first ``range_all`` of each prefix in ``doomed`` (prefix → key) stale: the key
    is deleted and the history compacted right after the read. Answers a wait for all of it."""
    real = etcd.range_all
    done: set[str] = set()
    finished = asyncio.Event()
    one_at_a_time = asyncio.Lock()  # two compactions to one revision: the second one fails

    async def range_all(key: str, **kw: Any) -> Range:
        res = await real(key, **kw)
        if key in doomed and key not in done:
            done.add(key)
            async with one_at_a_time:
                await etcd.delete(doomed[key])
                await etcd.put("/elsewhere", key)  # the compaction goes past the deletion
                await compact(server, (await etcd.status())["revision"])
            if done == set(doomed):
                finished.set()
        return res

    etcd.range_all = range_all  # type: ignore[method-assign]

    async def wait() -> None:
        await asyncio.wait_for(finished.wait(), 30)

    return wait


async def test_the_workers_queue_and_controls_drop_what_was_deleted_during_a_compaction(
    own_etcd, tmp_path
):
    server, etcd = own_etcd
    keys = Keys("/resync")
    gone_q, kept_q = keys.queue_entry(0, "run-gone"), keys.queue_entry(0, "run-kept")
    gone_c, kept_c = keys.control("run-gone"), keys.control("run-kept")
    for key in (gone_q, kept_q):
        await etcd.put(key, "{}")
    for key in (gone_c, kept_c):
        await etcd.put(key, json.dumps({"action": "cancel"}))
    session = await Session.open(etcd, 5)
    cfg = NodeConfig(node_id="w1", data_dir=str(tmp_path / "w1"))
    worker = Worker(
        etcd=etcd,
        keys=keys,
        store=Store(etcd, keys, Snowflake(1), now),
        session=session,
        node_id="w1",
        properties={},
        capacity=4,
        logs=build_logs(cfg.log_settings()),
        work_dir=str(tmp_path / "w1" / "work"),
        clock=now,
    )
    worker.accepting = False  # the cache is under test: nothing is claimed
    stale = stale_first_read(server, etcd, {keys.queue(): gone_q, keys.controls(): gone_c})
    task = asyncio.create_task(worker.run())
    try:
        await stale()
        await wait_for(
            lambda: (
                kept_q in worker.candidates
                and gone_q not in worker.candidates
                and "run-kept" in worker._controls
                and "run-gone" not in worker._controls
            ),
            timeout=30,
            what="the deleted queue entry and control request to leave the worker's caches",
        )
        assert kept_q in worker.candidates
        assert worker._controls.get("run-kept") == "cancel"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()
        await session.close()


async def test_the_placement_view_drops_a_node_deleted_during_a_compaction(own_etcd):
    server, etcd = own_etcd
    keys = Keys("/resync")
    for node in ("gone", "kept"):
        await etcd.put(keys.node(node), json.dumps({"id": node, "capacity": 4}))
    view = ClusterView(etcd, keys, "kept")
    stale = stale_first_read(server, etcd, {keys.nodes(): keys.node("gone")})
    task = asyncio.create_task(view.run())
    try:
        await stale()
        await wait_for(
            lambda: view.ready and "kept" in view.records and "gone" not in view.records,
            timeout=30,
            what="the deleted node to leave the placement view",
        )
        assert "kept" in view.records
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_notifier_goes_on_from_now_after_its_cursor_was_compacted(own_etcd):
    server, etcd = own_etcd
    keys = Keys("/resync")
    store = Store(etcd, keys, Snowflake(1), now)
    cursor = await etcd.put(keys.notifier_cursor(), json.dumps({"revision": 1}))
    await etcd.put(keys.job_run("p", "j", "missed"), "failed")  # finished in the compacted gap
    await compact(server, (await etcd.status())["revision"])
    assert cursor > 1
    session = await Session.open(etcd, 5)
    lead = await Election(etcd, keys, session, "n1").campaign()
    node = SimpleNamespace(
        store=store,
        etcd=etcd,
        keys=keys,
        config=SimpleNamespace(smtp_url=None, advertise_address="", etcd=[]),
    )
    notifier = Notifier(node, lead)  # type: ignore[arg-type]
    handled: list[str] = []

    async def handle(
        project: str, job: str, run_id: str, status: str, key: str, edited: object = None
    ) -> None:
        handled.append(run_id)

    notifier._handle = handle  # type: ignore[method-assign]
    dropped = metrics.NOTIFICATIONS.labels("any", "dropped")
    before = dropped._value.get()
    task = asyncio.create_task(notifier.run())
    try:
        await wait_for(
            lambda: dropped._value.get() > before,
            timeout=30,
            what="the notifier to count the compacted gap as dropped",
        )
        # a run that ends from here on is notified; put one until the notifier sees one, so the
        # test does not depend on the watch having started before the first put
        deadline, n = time.monotonic() + 30, 0
        while not handled:
            assert time.monotonic() < deadline, "the notifier did not go on after the gap"
            await etcd.put(keys.job_run("p", "j", f"after-{n}"), "succeeded")
            n += 1
            with contextlib.suppress(AssertionError):  # not yet: put another
                await wait_for(lambda: handled, timeout=1, what="a notified run")
        assert "missed" not in handled and all(r.startswith("after-") for r in handled)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await session.close()
