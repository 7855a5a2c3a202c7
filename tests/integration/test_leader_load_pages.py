"""A new leader's load reads the first page of schedule states beside the jobs' pages (D411):
every state is still handed over, after every job, all at the jobs' revision — also when the
states span several pages, and a write made during the load is left to the watch. Its side loops
start after its first pass, also when no job is due."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cluster.election import Election
from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.session import Session
from nodes.devtools.embedded import EtcdProcess
from nodes.leader.loading import load_jobs
from nodes.leader.scheduler import Scheduler
from tests.conftest import wait_for
from tests.integration.test_fencing import Rig


@pytest.fixture
async def paged(etcd_server: EtcdProcess) -> AsyncIterator[Etcd]:
    client = Etcd([etcd_server.endpoint], page_keys=3)  # 11 jobs: 4 pages of each prefix
    await client.connect()
    yield client
    await client.close()


async def test_every_state_follows_every_job_at_the_jobs_revision(paged: Etcd, keys: Keys):
    names = [f"j{i:02d}" for i in range(11)]
    for name in names:
        await paged.put(keys.job("p", name), b"{}")
        await paged.put(keys.schedule_state("p", name), b'{"n": 1}')
    seen: list[tuple[str, str]] = []
    late = keys.schedule_state("p", "zz-late")

    def on_job(key: str, value: bytes, rev: int) -> None:
        seen.append(("job", key.rsplit("/", 1)[-1]))

    writes: list[int] = []

    def on_state(key: str, value: bytes, rev: int) -> None:
        seen.append(("state", key.rsplit("/", 1)[-1]))

    async def write_late() -> None:
        writes.append(await paged.put(late, b'{"n": 2}'))

    # a state written while the load runs (after its first page): not in it, the watch brings it
    original = paged.range_pages

    def range_pages(key: str, **kw):  # type: ignore[no-untyped-def]
        async def pages():  # type: ignore[no-untyped-def]
            async for page in original(key, **kw):
                yield page
                if key == keys.jobs() and not writes:
                    await write_late()

        return pages()

    paged.range_pages = range_pages  # type: ignore[method-assign]
    rev = await load_jobs(paged, keys, on_job, on_state)
    assert [n for kind, n in seen if kind == "job"] == names
    assert [n for kind, n in seen if kind == "state"] == names  # every page, in order
    assert seen.index(("state", "j00")) == len(names)  # after the last job
    assert writes and rev < writes[0]  # the load's revision is the jobs' first page's


async def test_side_loops_start_after_the_first_pass_also_with_no_job(etcd: Etcd, keys: Keys):
    """The loops a new leader starts after its first pass (D411) start in a cluster without a
    job too (nothing due: the pass is empty), and not before it."""
    rig = Rig(etcd, keys)
    try:
        session = await Session.open(etcd, 5)
        rig.sessions.append(session)
        lead = await Election(etcd, keys, session, "n1").campaign()
        sched = Scheduler(etcd, keys, rig.store, lead, clock=rig.clock, node_id="n1")
        started: list[bool] = []

        async def side() -> None:
            started.append(sched.first_pass.is_set())

        waiting = asyncio.create_task(sched.after_first_pass(side))
        await asyncio.sleep(0)
        assert started == []
        running = asyncio.create_task(sched.run())
        try:
            await wait_for(lambda: started, 30, what="the side loop started")
            assert started == [True]
        finally:
            for task in (waiting, running):
                task.cancel()
            await asyncio.gather(waiting, running, return_exceptions=True)
    finally:
        await rig.close()
