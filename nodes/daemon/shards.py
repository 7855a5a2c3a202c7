"""A node's candidacies for the scheduling loop: one election per shard (D300-D304).

``Campaigns.run()`` reads the ``scheduler_shards`` setting (K, default 1), campaigns for every
shard and leads what it wins, until the session ends or K changes (then every term ends and the
node campaigns again under the new K). With K = 1 this is the single election of before: no delay,
no hand-over, shard 0 owns every job.

With K > 1, for each shard: wait ``campaign_delay(rank)`` (the node's rank for the shard among
the live nodes: first the node the balanced placement gives it, D395, then by score),
queue in the shard's election, and once leading, hand the shard over (resign and queue again)
while a better-ranked node is queued in the same election (looked at when the queue or the live
nodes change, D393). A shard leader fires its shard's jobs, fenced by its own election key;
shard 0's leader also runs the per-cluster loops and the notifier (D302).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from cluster.election import Election
from cluster.errors import CronmeshError, Unavailable
from cluster.etcd import Compare, Etcd, Event
from cluster.keys import Keys
from cluster.shard_store import read_shards
from cluster.shards import (
    Shard,
    campaign_delay,
    current_candidates,
    election_name,
    hand_over_to,
    rank_of,
)
from cluster.watch import follow
from nodes import metrics
from nodes.daemon.queueview import QueueView
from nodes.leader.feed import Feed
from nodes.leader.notifier import lead_with_notifier
from nodes.leader.scheduler import Scheduler
from nodes.worker.ownclaims import OwnClaims

if TYPE_CHECKING:
    from cluster.session import Session
    from cluster.store import Store
    from logstore.service import Logs
    from nodes.config import NodeConfig
    from nodes.worker.worker import Worker

log = structlog.get_logger(__name__)

HANDOVER_RETRY = 1.0  # s before a hand-over check whose read failed looks again (K > 1)


class Node(Protocol):
    """What the campaigns use of their node (the daemon's ``Node`` is one)."""

    etcd: Etcd
    keys: Keys
    store: Store | None
    config: NodeConfig
    logs: Logs
    leading: bool
    scheduler: Scheduler | None
    worker: Worker | None  # its leader claims its own runs for it (D444)

    clock: Callable[[], datetime]

    @property
    def node_id(self) -> str: ...


class ShardsChanged(Exception):
    """The ``scheduler_shards`` setting moved: every term of the old split ends."""


class Campaigns:
    def __init__(self, node: Node, session: Session) -> None:
        self.node = node
        self.session = session
        self.count = 1
        self.elections: dict[int, Election] = {}
        self.led: set[int] = set()  # the shards this node leads now
        # one watch per prefix for every shard this node leads, not one per shard (D356)
        self.feed = Feed(node.etcd)
        # the election queues and live nodes' leases, followed: a hand-over check runs when
        # they change, not every second per shard (D393)
        self.view = QueueView(node.etcd, node.keys)
        self.stopping = False  # set before the node cancels the campaigns (shutdown)

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self.feed.aclose()

    async def _run(self) -> None:
        while not self.session.lost.is_set():
            try:
                count, setting_rev, rev = await read_shards(self.node.etcd, self.node.keys)
            except Unavailable as exc:
                log.warning("cannot read scheduler_shards; retrying", error=str(exc))
                await asyncio.sleep(1.0)
                continue
            self.count = count
            metrics.SHARDS.set(count)
            guard = Compare.modified(self.node.keys.scheduler_shards(), setting_rev)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._watch_setting(setting_rev, rev))
                    if count > 1:  # K = 1 never hands over
                        tg.create_task(self.view.run())
                    for i in range(count):
                        tg.create_task(self._shard(Shard(i, count), guard))
            except* ShardsChanged:
                if self.stopping:  # 3.11's TaskGroup drops a cancel that came with the change
                    raise asyncio.CancelledError from None
                log.info("scheduler_shards changed: campaigning under the new split", was=count)
            finally:
                if not self.session.lost.is_set():  # a lost lease took the candidacies along
                    await self.resign_all()

    async def _watch_setting(self, setting_rev: int, rev: int) -> None:
        """Raise :class:`ShardsChanged` once the setting moves past ``setting_rev``."""
        changed = asyncio.Event()
        key = self.node.keys.scheduler_shards()

        def on_event(ev: Event) -> None:
            if ev.kind == "delete" or ev.kv.mod_revision != setting_rev:
                changed.set()

        while True:
            watch = asyncio.create_task(
                follow(self.node.etcd, key, rev, on_event, lambda: {key} if setting_rev else set())
            )
            seen = asyncio.create_task(changed.wait())
            try:
                await asyncio.wait([watch, seen], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (watch, seen):
                    task.cancel()
                await asyncio.gather(watch, seen, return_exceptions=True)
            if changed.is_set():
                raise ShardsChanged
            # the watch ended on an error it does not retry: read the setting again
            log.warning("scheduler_shards watch ended; reading it again")
            await asyncio.sleep(1.0)
            with contextlib.suppress(Unavailable):
                _, now, rev = await read_shards(self.node.etcd, self.node.keys)
                if now != setting_rev:
                    raise ShardsChanged

    async def resign_all(self) -> None:
        """Step down from every shard at once (shutdown, a change of K)."""
        led = sorted(self.led)
        for shard in list(self.elections):
            await self._resign(shard)
        if led:
            log.info("resigned leadership", shards=led)

    async def _resign(self, shard: int) -> None:
        election = self.elections.pop(shard, None)
        self._stopped(shard)
        if election is None:
            return
        try:
            await election.resign()
        except Unavailable as exc:
            log.warning("resign failed; the lease will expire", shard=shard, error=str(exc))

    def _started(self, shard: int) -> None:
        self.led.add(shard)
        metrics.SHARD_LEADER.labels(str(shard)).set(1)
        if shard == 0:
            self.node.leading = True
            metrics.LEADER.set(1)
            metrics.LEADER_CHANGES.inc()

    def _stopped(self, shard: int) -> None:
        if shard in self.led:
            metrics.SHARD_LEADER.labels(str(shard)).set(0)
        self.led.discard(shard)
        if shard == 0:
            self.node.leading = False
            self.node.scheduler = None
            metrics.LEADER.set(0)

    async def _rank(self, shard: int) -> int:
        live = await self.node.etcd.range(self.node.keys.nodes(), keys_only=True)
        nodes = [kv.key.rsplit("/", 1)[-1] for kv in live.kvs]
        return rank_of(self.node.node_id, shard, nodes, self.count)

    async def _better(self, shard: int) -> str | None:
        """A better-ranked node queued for ``shard`` under its CURRENT lease: a node restarted
        within a TTL still has its old, dead candidacy queued, which must not be handed to."""
        etcd, keys = self.node.etcd, self.node.keys
        queued = await etcd.range(keys.election(election_name(shard)))
        live = await etcd.range(keys.nodes(), revision=queued.revision)
        lease_of = {kv.key.rsplit("/", 1)[-1]: kv.lease for kv in live.kvs}
        candidacies = [(kv.value.decode(), int(kv.key.rsplit("/", 1)[-1], 16)) for kv in queued.kvs]
        current = current_candidates(candidacies, lease_of)
        return hand_over_to(self.node.node_id, shard, current, live=lease_of, shards=self.count)

    async def _shard(self, shard: Shard, guard: object) -> None:
        node, i = self.node, shard.index
        delay, first = 0.2, True
        while not self.session.lost.is_set():
            election = Election(
                node.etcd, node.keys, self.session, node.node_id, election_name(i), guard=guard
            )
            self.elections[i] = election
            try:
                if first and shard.count > 1:
                    await asyncio.sleep(campaign_delay(await self._rank(i)))
                first = False
                leadership = await election.campaign()
                if shard.count > 1 and (to := await self._better(i)) is not None:
                    log.info("handing the shard over", shard=i, to=to)
                    await self._resign(i)
                    continue
                self._started(i)
                log.info("became leader", revision=leadership.revision, shard=i, of=shard.count)
                assert node.store is not None
                scheduler = Scheduler(
                    node.etcd,
                    node.keys,
                    node.store,
                    leadership,
                    clock=node.clock,
                    node_id=node.node_id,
                    archive=node.logs.archive,
                    ahead=node.config.materialize_ahead,
                    shard=shard,
                    feed=self.feed,
                    own=OwnClaims(node.worker) if node.worker is not None else None,  # D444
                )
                if shard.singletons:
                    node.scheduler = scheduler
                    term = lead_with_notifier(scheduler, node, leadership)
                else:
                    term = scheduler.run()
                if shard.count == 1:
                    await term
                elif to := await self._lead_until_better(i, term):
                    log.info("handing the shard over", shard=i, to=to)
                    await self._resign(i)
            except asyncio.CancelledError:
                raise
            except (CronmeshError, Exception) as exc:  # includes ExceptionGroup from the loop
                log.warning("scheduler stopped; campaigning again", shard=i, error=repr(exc))
                self._stopped(i)
                with contextlib.suppress(Exception):
                    await self._resign(i)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self._stopped(i)

    async def _lead_until_better(self, shard: int, term: Coroutine[Any, Any, None]) -> str | None:
        """Run the term until it ends (raising what it raised) or a better-ranked node queues
        for the shard: then stop the term and answer that node (the caller resigns).

        Looks when the view says the shard's queue or the live nodes changed (D393); the view's
        answer is confirmed by one read at one revision before anything is handed over."""
        task = asyncio.ensure_future(term)
        wake = self.view.wake(shard)
        retry: float | None = None  # s until the next look: set while a confirming read fails
        try:
            while True:
                wake.clear()  # a change from here on wakes the next wait
                if (
                    retry is not None
                    or self.view.better(self.node.node_id, shard, self.count) is not None
                ):
                    try:
                        if (to := await self._better(shard)) is not None:
                            return to
                        retry = None
                    except Unavailable:
                        retry = HANDOVER_RETRY
                woken = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait(
                        [task, woken], timeout=retry, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    woken.cancel()
                    await asyncio.gather(woken, return_exceptions=True)
                if task.done():
                    await task
                    return None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
