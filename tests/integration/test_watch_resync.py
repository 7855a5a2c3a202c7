"""A leader's caches after a watch compaction (issue #20): the leader re-reads each prefix, and
every key it had cached that is gone now is handled as a deletion, whichever cache holds it.

Real etcd of the test's own (it compacts the whole keyspace, which must not reach other tests'
watches): the leader loads, then, before its watches start, a workflow and a job are deleted and
the history is compacted past the load revision, so every watch starts on a compacted revision.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cluster.election import Election
from cluster.etcd import Etcd
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import JobSpec
from cluster.session import Session
from cluster.store import Store
from cluster.workflow_store import WorkflowStore
from cluster.workflows import WorkflowSpec
from nodes.devtools.embedded import EtcdProcess, etcd_binary
from nodes.leader.scheduler import Scheduler
from tests.conftest import wait_for

P = "p"
EVERY_SECOND = [{"cron": "* * * * * *"}]


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


async def compact(server: EtcdProcess, revision: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        etcd_binary("etcdctl"),
        f"--endpoints={server.endpoint}",
        "compact",
        str(revision),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out


async def test_a_workflow_deleted_during_a_compaction_stops_firing(own_etcd):
    server, etcd = own_etcd
    keys = Keys("/resync")
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store(etcd, keys, Snowflake(3), lambda: clock[0])
    wfs = WorkflowStore(store)
    for name in ("gone", "kept"):
        spec = WorkflowSpec(
            name=name, tasks=[{"name": "t1", "command": "true"}], schedules=EVERY_SECOND
        )
        await wfs.put_workflow(P, spec)
    for name in ("gone-job", "kept-job"):
        await store.put_job(P, JobSpec(name=name, command="true", schedules=EVERY_SECOND))
    session = await Session.open(etcd, 5)
    lead = await Election(etcd, keys, session, "n1").campaign()
    sched = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1")
    engine = sched.workflows
    loaded = asyncio.Event()
    load = engine._load

    async def load_then_delete_and_compact() -> int:
        rev = await load()
        assert set(engine.workflows) == {(P, "gone"), (P, "kept")}
        await wfs.delete_workflow(P, "gone")
        await store.delete_job(P, "gone-job")
        now = await etcd.range(keys.workflows(), count_only=True)
        await compact(server, now.revision)
        loaded.set()
        return rev

    engine._load = load_then_delete_and_compact  # type: ignore[method-assign]
    task = asyncio.create_task(sched.run())
    try:
        await asyncio.wait_for(loaded.wait(), 30)
        await wait_for(
            lambda: (P, "gone") not in engine.workflows and (P, "gone-job") not in sched.jobs,
            timeout=30,
            what="the deleted workflow and job to leave the leader's caches",
        )
        assert (P, "kept") in engine.workflows and (P, "kept-job") in sched.jobs
        # a tick is due: the deleted workflow creates no execution, the kept one does
        clock[0] += timedelta(seconds=1, milliseconds=5)
        await engine.fire((P, "gone"))
        await engine.fire((P, "kept"))
        executions = await etcd.range(keys.executions(P))
        assert len(executions.kvs) == 1
        assert b'"workflow":"kept"' in executions.kvs[0].value
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await session.close()
