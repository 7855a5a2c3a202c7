"""A shard leader's hand-over check runs when its election's queue or the live nodes change, not
every second (``nodes.daemon.queueview``, D393), against a real etcd: a better-ranked candidacy
under its node's current lease is handed the shard within a deadline (a missed wake-up fails the
test), a dead candidacy left by a restart within a TTL never is, and nothing is read from etcd
while nothing changes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.errors import Unavailable
from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.shards import election_name, ranking
from nodes.daemon import shards as shards_module
from nodes.daemon.shards import Campaigns
from tests.conftest import wait_for

SHARD, COUNT = 3, 4
DEADLINE = 30.0  # s for a wake-up to reach the check on a loaded machine


def pair(shard: int) -> tuple[str, str]:
    """(me, better): two node ids where ``better`` outranks ``me`` for ``shard``."""
    better, me = ranking(shard, ["node-a", "node-b"], COUNT)
    return me, better


class Leader:
    """A node's ``Campaigns`` leading ``SHARD`` with a term that never ends; counts its reads."""

    def __init__(self, etcd: Etcd, keys: Keys, me: str) -> None:
        node = SimpleNamespace(etcd=etcd, keys=keys, node_id=me)
        self.campaigns = Campaigns(node, SimpleNamespace(lost=asyncio.Event()))  # type: ignore[arg-type]
        self.campaigns.count = COUNT
        self.reads = 0
        self.fail_reads = 0
        read = self.campaigns._better

        async def counted(shard: int) -> str | None:
            self.reads += 1
            if self.fail_reads:
                self.fail_reads -= 1
                raise Unavailable("etcd away (test)")
            return await read(shard)

        self.campaigns._better = counted  # type: ignore[method-assign]
        self.view_task = asyncio.create_task(self.campaigns.view.run())
        self.term_ended = asyncio.Event()
        self.lead = asyncio.create_task(
            self.campaigns._lead_until_better(SHARD, self.term_ended.wait())
        )

    async def seen(self, key: str) -> None:
        view = self.campaigns.view
        await wait_for(
            lambda: view.ready and key in view.queued.get(election_name(SHARD), {}),
            DEADLINE,
            0.02,
            f"the view to see {key}",
        )

    async def aclose(self) -> None:
        for task in (self.lead, self.view_task):
            task.cancel()
        await asyncio.gather(self.lead, self.view_task, return_exceptions=True)
        await self.campaigns.feed.aclose()


async def register(etcd: Etcd, keys: Keys, node: str, lease: int) -> None:
    await etcd.put(keys.node(node), f'{{"id": "{node}"}}', lease=lease)


async def queue(etcd: Etcd, keys: Keys, node: str, lease: int, shard: int = SHARD) -> str:
    key = keys.candidate(lease, election_name(shard))
    await etcd.put(key, node, lease=lease)
    return key


@pytest.fixture
async def leases(etcd: Etcd) -> Any:
    granted: list[int] = []

    async def grant() -> int:
        granted.append(await etcd.grant(30))
        return granted[-1]

    yield grant
    for lease in granted:
        await etcd.revoke(lease)


@pytest.mark.timeout(120)
async def test_a_current_candidacy_is_handed_the_shard_and_a_dead_one_never(etcd, keys, leases):
    me, better = pair(SHARD)
    mine, old, new = await leases(), await leases(), await leases()
    await register(etcd, keys, me, mine)
    await register(etcd, keys, better, new)  # restarted: its live record is under ``new``
    await queue(etcd, keys, me, mine)
    leader = Leader(etcd, keys, me)
    try:
        # the restarted node's old candidacy (lease ``old``) is still queued: never handed to
        dead = await queue(etcd, keys, better, old)
        await leader.seen(dead)
        await asyncio.sleep(1.5)  # what the old check did every second: read; this one: nothing
        assert not leader.lead.done()
        assert leader.reads == 0, "the view saw nothing to hand over, yet etcd was read"
        # its candidacy under the current lease: the check wakes and hands over
        await queue(etcd, keys, better, new)
        to = await asyncio.wait_for(asyncio.shield(leader.lead), DEADLINE)
        assert to == better
        assert leader.reads == 1  # one confirming read at one revision
    finally:
        await leader.aclose()


@pytest.mark.timeout(120)
async def test_a_node_record_that_catches_up_wakes_the_check(etcd, keys, leases):
    """The other wake-up: the queue stays as it is and the node set changes (a candidacy whose
    node's record moves to the candidacy's lease becomes current)."""
    me, better = pair(SHARD)
    mine, first, second = await leases(), await leases(), await leases()
    await register(etcd, keys, me, mine)
    await register(etcd, keys, better, first)
    await queue(etcd, keys, me, mine)
    leader = Leader(etcd, keys, me)
    try:
        waiting = await queue(etcd, keys, better, second)  # not its node's lease (yet)
        await leader.seen(waiting)
        await asyncio.sleep(1.0)
        assert not leader.lead.done() and leader.reads == 0
        await register(etcd, keys, better, second)
        to = await asyncio.wait_for(asyncio.shield(leader.lead), DEADLINE)
        assert to == better
    finally:
        await leader.aclose()


@pytest.mark.timeout(120)
async def test_another_shards_queue_does_not_wake_this_one(etcd, keys, leases):
    me, better = pair(SHARD)
    mine, theirs = await leases(), await leases()
    await register(etcd, keys, me, mine)
    await register(etcd, keys, better, theirs)
    await queue(etcd, keys, me, mine)
    leader = Leader(etcd, keys, me)
    try:
        view = leader.campaigns.view
        await leader.seen(keys.candidate(mine, election_name(SHARD)))
        other = (SHARD + 1) % COUNT
        wake, wake_other = view.wake(SHARD), view.wake(other)
        await wait_for(lambda: not wake.is_set(), DEADLINE, 0.02, "the check to go back to sleep")
        wake_other.clear()
        await queue(etcd, keys, better, theirs, shard=other)
        await wait_for(wake_other.is_set, DEADLINE, 0.02, f"shard {other}'s wake-up")
        assert not wake.is_set(), "a queue change of another shard woke this shard's check"
        assert not leader.lead.done() and leader.reads == 0
    finally:
        await leader.aclose()


@pytest.mark.timeout(120)
async def test_a_confirming_read_that_fails_is_retried(etcd, keys, leases, monkeypatch):
    """The view said "hand over" and etcd could not be read: the check looks again after
    ``HANDOVER_RETRY`` instead of waiting for a change that may never come."""
    monkeypatch.setattr(shards_module, "HANDOVER_RETRY", 0.2)
    me, better = pair(SHARD)
    mine, theirs = await leases(), await leases()
    await register(etcd, keys, me, mine)
    await register(etcd, keys, better, theirs)
    await queue(etcd, keys, me, mine)
    leader = Leader(etcd, keys, me)
    leader.fail_reads = 2
    try:
        await queue(etcd, keys, better, theirs)
        to = await asyncio.wait_for(asyncio.shield(leader.lead), DEADLINE)
        assert to == better
        assert leader.reads == 3  # two failed, the third confirmed
    finally:
        await leader.aclose()


@pytest.mark.timeout(60)
async def test_the_term_ending_ends_the_check(etcd, keys, leases):
    me, _ = pair(SHARD)
    mine = await leases()
    await register(etcd, keys, me, mine)
    await queue(etcd, keys, me, mine)
    leader = Leader(etcd, keys, me)
    try:
        leader.term_ended.set()
        assert await asyncio.wait_for(asyncio.shield(leader.lead), DEADLINE) is None
    finally:
        await leader.aclose()
