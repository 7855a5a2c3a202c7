"""Leader election by create revision, as etcd's own concurrency package does it.

Each candidate writes ``election/<name>/<lease hex>`` bound to its lease. The candidate whose key
has the lowest create revision leads. The others wait only for the deletion of their immediate
predecessor (no herd). The leader proves it still leads by comparing its key's create revision in
every write it makes (fencing): once its lease is gone, the key is gone and those writes fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cluster.errors import LostOwnership, Unavailable
from cluster.etcd import Compare, Etcd, Op, TxnResult
from cluster.keys import ELECTION_SCHEDULER, Keys
from cluster.session import Session


@dataclass(frozen=True, slots=True)
class Leadership:
    key: str
    revision: int  # create revision of the leader's key: the fencing token

    def fence(self) -> object:
        return Compare.created(self.key, self.revision)

    def probe(self) -> Any:
        """A read of the leader's key, for the reads of a fenced transaction (see
        :meth:`check_fenced`)."""
        return Op.get(self.key)

    def check_fenced(self, res: TxnResult, what: str, probe: int = 0) -> None:
        """After a fenced transaction failed: raise :class:`LostOwnership` when its read of the
        leader's key (``probe``: the index of :meth:`probe` among its reads) shows the key gone or
        another's; return when it was another compare that failed."""
        leader = res.range_kvs(probe)
        if not leader or leader[0].create_revision != self.revision:
            raise LostOwnership(f"leadership lost: {what}")


class Election:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        session: Session,
        node_id: str,
        name: str = ELECTION_SCHEDULER,
        *,
        guard: object | None = None,
    ) -> None:
        """``guard``: a compare the candidacy is written under (sharding, D300: the shard count
        setting unchanged since the candidate read it)."""
        self.etcd = etcd
        self.keys = keys
        self.session = session
        self.node_id = node_id
        self.name = name
        self.key = keys.candidate(session.lease_id, name)
        self.revision = 0
        self.guard = guard

    async def campaign(self) -> Leadership:
        """Become a candidate and return once this node leads."""
        if not self.revision:
            guard = [self.guard] if self.guard is not None else []
            res = await self.etcd.txn(
                [Compare.absent(self.key), *guard],
                [Op.put(self.key, self.node_id, self.session.lease_id)],
                [Op.get(self.key)],
            )
            if res.succeeded:
                self.revision = res.revision
            else:
                kvs = res.range_kvs(0)
                if not kvs and guard:
                    raise LostOwnership("the scheduler shard count changed while campaigning")
                if not kvs:
                    raise Unavailable("election key vanished while campaigning")
                self.revision = kvs[0].create_revision
        prefix = self.keys.election(self.name)
        while True:
            pred = await self.etcd.range(
                prefix,
                max_create_revision=self.revision - 1,
                sort="create",
                descending=True,
                limit=1,
            )
            if not pred.kvs:
                mine = await self.etcd.get(self.key)
                if mine is None or mine.create_revision != self.revision:
                    raise Unavailable("election key lost while campaigning")
                return Leadership(self.key, self.revision)
            await self._wait_deleted(pred.kvs[0].key, pred.revision)

    async def _wait_deleted(self, key: str, revision: int) -> None:
        async for batch in self.etcd.watch(key, start_revision=revision + 1, prefix=False):
            if any(ev.kind == "delete" for ev in batch.events):
                return

    async def resign(self) -> None:
        """Step down at once (a successor takes over without waiting for the lease to expire)."""
        if self.revision:
            await self.etcd.txn([Compare.created(self.key, self.revision)], [Op.delete(self.key)])
            self.revision = 0


async def current_leader(etcd: Etcd, keys: Keys, name: str = ELECTION_SCHEDULER) -> str | None:
    """The node id of the current leader, or None when nobody leads."""
    res = await etcd.range(keys.election(name), sort="create", limit=1)
    return res.kvs[0].value.decode() if res.kvs else None
