"""A node's view of every shard election's queue and of the live nodes' leases (D393).

A shard leader hands its shard over when a better-ranked node is queued in the shard's election
under that node's current lease (D304). It used to find out by reading the election's queue and
the node list every second, per shard it led: two ranges a second per shard, whether anything
had moved or not. :class:`QueueView` follows the same two things with two watches per node
(every shard election lives under one prefix, ``election/scheduler``: shard 0's ``scheduler/``
and shard i's ``scheduler-i/``), and wakes a shard's check only when that shard's queue or the
set of live nodes changes (:meth:`QueueView.wake`).

The view only says WHEN to look: the two watches are at different revisions, so for a moment it
can pair a candidacy with a lease the node no longer holds. Before a leader resigns it reads the
queue and the node list at one revision (``Campaigns._better``), as before; the view can delay
a hand-over (until the lagging watch delivers, which wakes the check again), never cause a wrong
one. Bounded by what etcd holds: at most ``MAX_SHARDS`` elections x live nodes candidacies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from cluster.etcd import KV, Etcd, WatchBatch
from cluster.keys import ELECTION_SCHEDULER, Keys
from cluster.shards import current_candidates, election_name, hand_over_to
from cluster.watch import by_key, follow

log = structlog.get_logger(__name__)

RESTART_AFTER = 1.0  # s before the view follows again after its watches ended on an error


class QueueView:
    """Followed by a node that campaigns for K > 1 shards; read by its shard leaders."""

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys
        self.base = keys.election(ELECTION_SCHEDULER)[: -len(ELECTION_SCHEDULER) - 1]
        self.root = self.base + ELECTION_SCHEDULER  # every shard election's queue (no "/")
        # election name -> candidacy key -> (node, lease the key is bound to)
        self.queued: dict[str, dict[str, tuple[str, int]]] = {}
        self.leases: dict[str, int] = {}  # node -> the lease of its live nodes/<id> record
        self.loaded: set[str] = set()
        self._wakes: dict[str, asyncio.Event] = {}

    @property
    def ready(self) -> bool:
        return len(self.loaded) == 2

    def wake(self, shard: int) -> asyncio.Event:
        """Set whenever shard's queue or the live nodes change (the caller clears it)."""
        return self._wakes.setdefault(election_name(shard), asyncio.Event())

    def better(self, me: str, shard: int, shards: int) -> str | None:
        """The node ``me`` should hand ``shard`` to, as the view sees it now (None until both
        watches have read): a hint to confirm with one consistent read, never a decision."""
        if not self.ready:
            return None
        queued = self.queued.get(election_name(shard), {}).values()
        current = current_candidates(queued, self.leases)
        return hand_over_to(me, shard, current, live=self.leases, shards=shards)

    def _wake_all(self) -> None:
        for event in self._wakes.values():
            event.set()

    async def run(self) -> None:
        """Follow until cancelled; an error that ends the watches restarts them (the view is
        not ready meanwhile, so no check hands over on it)."""
        try:
            while True:
                # asyncio.wait, not a TaskGroup: on 3.11 a TaskGroup drops our cancel when a
                # follow fails at the same moment, and this loop would go on for ever (D420)
                follows = [
                    asyncio.create_task(self._follow(self.root, self._on_candidacy)),
                    asyncio.create_task(self._follow(self.keys.nodes(), self._on_node)),
                ]
                try:
                    await asyncio.wait(follows, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in follows:
                        task.cancel()
                    ended = await asyncio.gather(*follows, return_exceptions=True)
                errors = [e for e in ended if not isinstance(e, asyncio.CancelledError | None)]
                log.warning("election view ended; following again", error=repr(errors))
                self.loaded.clear()
                await asyncio.sleep(RESTART_AFTER)
        finally:
            self.loaded.clear()  # a view nobody follows is not ready

    async def _follow(self, prefix: str, handle: Callable[[str, KV | None], None]) -> None:
        elections = prefix == self.root

        def reset() -> None:
            if elections:
                self.queued.clear()
            else:
                self.leases.clear()

        def on_read(_revision: int) -> None:
            self.loaded.add(prefix)
            self._wake_all()

        def on_batch(batch: WatchBatch, _position: int) -> None:
            if not batch.events:
                return
            if not elections:
                self._wake_all()
                return
            for ev in batch.events:  # only the shards whose queue moved
                name = self._election_of(ev.kv.key)
                if name is not None and (event := self._wakes.get(name)) is not None:
                    event.set()

        await follow(
            self.etcd,
            prefix,
            None,
            by_key(handle),
            what="election view",
            reread=True,
            reset=reset,
            on_read=on_read,
            on_batch=on_batch,
        )

    def _election_of(self, key: str) -> str | None:
        parts = key[len(self.base) :].split("/")
        return parts[0] if len(parts) == 2 else None

    def _on_candidacy(self, key: str, kv: KV | None) -> None:
        name = self._election_of(key)
        if name is None:
            return
        if kv is None:
            queue = self.queued.get(name)
            if queue is not None:
                queue.pop(key, None)
                if not queue:
                    del self.queued[name]
            return
        try:
            lease = int(key.rsplit("/", 1)[-1], 16)
        except ValueError:
            return  # not a candidacy (its key names its lease)
        self.queued.setdefault(name, {})[key] = (kv.value.decode(errors="replace"), lease)

    def _on_node(self, key: str, kv: KV | None) -> None:
        node = key.rsplit("/", 1)[-1]
        if kv is None:
            self.leases.pop(node, None)
        else:
            self.leases[node] = kv.lease
