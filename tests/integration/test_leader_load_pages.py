"""A new leader's load reads the first page of schedule states beside the jobs' pages (D411):
every state is still handed over, after every job, all at the jobs' revision — also when the
states span several pages, and a write made during the load is left to the watch."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from nodes.devtools.embedded import EtcdProcess
from nodes.leader.loading import load_jobs


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
