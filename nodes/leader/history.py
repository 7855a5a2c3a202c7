"""The leader sums each project's run-history charges (D318).

Every run and execution record has a charge key written in the same transaction as the record
(``cluster.history``). The leader reads all charges once when it starts leading, then follows
their changes through one watch (``cluster.watch.follow``), keeping each charge and each
project's total in memory; every ``PUBLISH_EVERY`` seconds it writes the totals that changed to
``history-used/<project>/bytes`` (fenced: a deposed leader writes nothing) and sets the projects
at their quota on its store, for its own ticks (``RunOps.history_over``). The API's creations
compare against the written totals (``QuotaStore.check_history``). The totals are derived from
the records' charges, never kept up by increments: a leader killed at any point loses nothing,
and its successor's first read is exact again.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import structlog

from cluster.election import Leadership
from cluster.errors import Unavailable
from cluster.etcd import KV, Compacted, Compare, Etcd, Op
from cluster.history import execution_charge, parse_bytes, run_charge
from cluster.models import Run
from cluster.store import MAX_TXN_OPS, Store
from cluster.watch import by_key, follow
from nodes.leader.loops import periodic

log = structlog.get_logger(__name__)

PUBLISH_EVERY = 2.0
# Records written before D318 have no charge: found by a keys-only read of runs and executions
# (what retention reads too), at most ADOPT_BATCH charged per pass, compared on the record.
ADOPT_EVERY = 60.0
ADOPT_IDLE_MAX = 3600.0  # a pass that finds none waits twice as long as the last, up to this
ADOPT_BATCH = 1024
ADOPT_PER_TXN = 64


class HistoryAccountant:
    def __init__(
        self, etcd: Etcd, store: Store, leadership: Leadership, every: float = PUBLISH_EVERY
    ) -> None:
        self.etcd = etcd
        self.store = store
        self.keys = store.keys
        self.lead = leadership
        self.every = every
        self.base = self.keys.history_charges()
        # project -> record id -> charge; and the sums (memory: ~120 bytes per kept record)
        self.charges: dict[str, dict[str, int]] = defaultdict(dict)
        self.totals: dict[str, int] = defaultdict(int)
        self.ready = False  # the first read is in
        self.published: dict[str, int] | None = None  # the totals written (None: to be read)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(
                    follow(
                        self.etcd,
                        self.base,
                        None,
                        by_key(self._on_charge),
                        reset=self._clear,
                        on_read=self._loaded,
                        what="history charges",
                    )
                )
                tg.create_task(periodic(self.every, self.publish))
                tg.create_task(self._adopting())
        finally:
            self.store.history_over = frozenset()  # no longer leading: no tick of ours to skip

    def _clear(self) -> None:
        self.charges.clear()
        self.totals.clear()

    def _loaded(self, revision: int) -> None:
        self.ready = True

    def _on_charge(self, key: str, kv: KV | None) -> None:
        project, _, record = key[len(self.base) :].partition("/")
        old = self.charges[project].pop(record, 0)
        new = parse_bytes(kv.value) if kv is not None else 0
        if kv is not None:
            self.charges[project][record] = new
        self.totals[project] += new - old
        if not self.charges[project]:
            del self.charges[project]

    async def count(self) -> dict[str, int]:
        """Read every charge again and publish (what the watch keeps up between two reads; the
        tests call it for one exact pass). Answers the totals."""
        self._clear()
        async for page in self.etcd.range_pages(self.base):
            for kv in page.kvs:
                self._on_charge(kv.key, kv)
        self.ready = True
        return await self.publish()

    async def publish(self) -> dict[str, int]:
        """Write the totals that changed; set the projects at their quota on the store."""
        if not self.ready:
            return {}
        totals = dict(self.totals)
        if self.published is None:  # what is written now: read once per term
            used_base = self.keys.history_used("")[: -len("/bytes")]
            self.published = {}
            async for page in self.etcd.range_pages(used_base):
                for kv in page.kvs:
                    project = kv.key[len(used_base) :].split("/", 1)[0]
                    self.published[project] = parse_bytes(kv.value)
        changed = {
            p: totals.get(p, 0)
            for p in sorted(set(totals) | set(self.published))
            if self.published.get(p) != totals.get(p, 0)
        }
        ops = [Op.put(self.keys.history_used(p), str(n)) for p, n in changed.items()]
        for i in range(0, len(ops), MAX_TXN_OPS):
            res = await self.etcd.txn([self.lead.fence()], ops[i : i + MAX_TXN_OPS])
            if not res.succeeded:  # deposed: nothing written; its term is ending
                self.published = None
                return totals
        self.published.update(changed)
        over = await self._over(totals)
        if over != self.store.history_over:
            log.info("projects at their run-history quota", projects=sorted(over)[:20])
        self.store.history_over = frozenset(over)
        return totals

    async def _adopting(self) -> None:
        """``adopt`` again and again, paced by :func:`adopt_delay`."""
        delay = ADOPT_EVERY
        while True:
            try:
                found: int | None = await self.adopt()
            except (Unavailable, Compacted) as exc:
                log.warning("charging older records failed", error=str(exc))
                found = None
            delay = adopt_delay(found, delay)
            await asyncio.sleep(delay)

    async def adopt(self) -> int:
        """Charge records that have no charge (written before D318): each read and charged in a
        transaction that compares the record unchanged and the charge absent, fenced. Answers
        how many were charged."""
        if not self.ready:
            return 0
        missing: list[str] = []
        for base in (self.keys.runs(), self.keys.executions()):
            async for page in self.etcd.range_pages(base, keys_only=True):
                for kv in page.kvs:
                    project, _, record = kv.key[len(base) :].partition("/")
                    if record not in self.charges.get(project, {}):
                        missing.append(kv.key)
                if len(missing) >= ADOPT_BATCH:
                    break
        nested = []
        for kv in await self.store.get_many(missing[:ADOPT_BATCH]):
            project, record = kv.key.rsplit("/", 2)[-2:]
            key = self.keys.history_charge(project, record)
            guards = [Compare.modified(kv.key, kv.mod_revision), Compare.absent(key)]
            nested.append(Op.nested(guards, [Op.put(key, str(self._legacy_charge(kv)))]))
        done = 0
        for i in range(0, len(nested), ADOPT_PER_TXN):  # each charge applies on its own compares
            res = await self.etcd.txn([self.lead.fence()], nested[i : i + ADOPT_PER_TXN])
            if not res.succeeded:
                return done  # deposed
            done += sum(1 for r in res.responses if r.response_txn.succeeded)
        if done:
            log.info("charged run-history records written before D318", records=done)
        return done

    def _legacy_charge(self, kv: KV) -> int:
        try:
            if kv.key.startswith(self.keys.executions()):
                tasks = json.loads(kv.value).get("tasks")
                return execution_charge(len(kv.value), len(tasks) if isinstance(tasks, dict) else 0)
            return run_charge(Run.model_validate_json(kv.value), len(kv.value))
        except ValueError:
            return len(kv.value)

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
            if n >= self.store.quotas.overridden(overrides.get(project)).run_history_bytes:
                over.add(project)
        return over


def adopt_delay(found: int | None, previous: float) -> float:
    """Seconds until the next search for uncharged records, after one that charged ``found``
    (None: it failed). A full batch goes on at once; some found, or a failure, in a minute;
    none found, twice the last wait up to an hour — once every node writes charges (after an
    upgrade) a pass finds none, and a keys-only read of every run each minute is waste."""
    if found is not None and found >= ADOPT_BATCH:
        return 1.0
    if found is None or found > 0:
        return ADOPT_EVERY
    return min(max(previous, ADOPT_EVERY) * 2, ADOPT_IDLE_MAX)
