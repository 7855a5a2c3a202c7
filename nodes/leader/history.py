"""The leader sums each project's run-history charges (D318).

Every run and execution record has a charge key written in the same transaction as the record
(``cluster.history``). Every ``HISTORY_EVERY`` seconds the leader reads all charges at one
revision, sums them per project and writes the totals that changed to
``history-used/<project>/bytes`` (fenced: a deposed leader writes nothing). The API's creations
compare against that total (``QuotaStore.check_history``); the leader's own ticks read the set of
projects at their quota from its store (``RunOps.history_over``). A sum is derived from the
records, never kept up by increments: a leader killed in the middle of a pass loses nothing, and
the next pass (its successor's first) is exact again.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import structlog

from cluster.election import Leadership
from cluster.etcd import Etcd, Op
from cluster.history import parse_bytes
from cluster.store import MAX_TXN_OPS, Store
from nodes.leader.loops import periodic

log = structlog.get_logger(__name__)

HISTORY_EVERY = 5.0


class HistoryAccountant:
    def __init__(
        self, etcd: Etcd, store: Store, leadership: Leadership, every: float = HISTORY_EVERY
    ) -> None:
        self.etcd = etcd
        self.store = store
        self.keys = store.keys
        self.lead = leadership
        self.every = every

    async def run(self) -> None:
        try:
            await periodic(self.every, self.count)
        finally:
            self.store.history_over = frozenset()  # no longer leading: no tick of ours to skip

    async def count(self) -> dict[str, int]:
        """One pass: the totals per project (written where they changed) and the projects at
        their quota. Answers the totals."""
        base = self.keys.history_charges()
        totals: dict[str, int] = defaultdict(int)
        async for page in self.etcd.range_pages(base):
            for kv in page.kvs:
                project = kv.key[len(base) :].split("/", 1)[0]
                totals[project] += parse_bytes(kv.value)
        used_base = self.keys.history_used("")[: -len("/bytes")]
        known: dict[str, int] = {}
        async for page in self.etcd.range_pages(used_base):
            for kv in page.kvs:
                known[kv.key[len(used_base) :].split("/", 1)[0]] = parse_bytes(kv.value)
        ops: list[Any] = []
        for project in sorted(set(totals) | set(known)):
            n = totals.get(project, 0)
            if known.get(project) != n:
                ops.append(Op.put(self.keys.history_used(project), str(n)))
        for i in range(0, len(ops), MAX_TXN_OPS):
            await self.etcd.txn([self.lead.fence()], ops[i : i + MAX_TXN_OPS])
        self.store.history_over = frozenset(await self._over(totals))
        return dict(totals)

    async def _over(self, totals: dict[str, int]) -> set[str]:
        """The projects whose charges reach their run-history quota."""
        overrides: dict[str, Any] = {}
        async for page in self.etcd.range_pages(self.keys.projects()):
            for kv in page.kvs:
                try:
                    record = json.loads(kv.value)
                except ValueError:
                    continue
                quotas = record.get("quotas") if isinstance(record, dict) else None
                overrides[kv.key.rsplit("/", 1)[-1]] = quotas if isinstance(quotas, dict) else None
        over = set()
        for project, n in totals.items():
            limit = self.store.quotas.overridden(overrides.get(project)).run_history_bytes
            if n >= limit:
                over.add(project)
        if over != self.store.history_over:
            log.info("projects at their run-history quota", projects=sorted(over)[:20])
        return over
