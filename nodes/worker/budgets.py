"""The worker's side of budgets (D275): a cache of every budget, its held slots and its start
window, kept by one watch over the budget keys; which queued runs a budget holds back (and why);
the compares and writes a claim adds so that no more than ``concurrent`` runs hold a slot and no
more than ``starts.limit`` start per window, however many workers race.

A held-back run is not claimed and stays ``pending``. It is looked at again when the watch
delivers a change of the budget (a slot freed: a run ended or its node's lease expired) or, for a
full start window, by a timer at the window's end: no polling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from cluster.budgets import (
    Budget,
    BudgetSpec,
    Wait,
    Window,
    admit_start,
    check,
    free_slot,
    joined,
)
from cluster.errors import Unavailable
from cluster.etcd import KV, Compacted, Compare, Etcd, Op
from cluster.keys import Keys
from cluster.models import Run
from nodes import metrics

log = structlog.get_logger(__name__)

JOINED_KEPT = 4096  # remembered (project, budgets, tags) combinations of queued runs


@dataclass(slots=True)
class Plan:
    """What a claim adds for the budgets of its run."""

    budgets: list[str]
    at: datetime | None = None  # the instant whose start windows it counts: the run's start
    compares: list[Any] = field(default_factory=list)
    ops: list[Any] = field(default_factory=list)
    slots: list[str] = field(default_factory=list)  # slot keys taken (deleted at completion)
    windows: dict[str, Window] = field(default_factory=dict)


class BudgetGate:
    def __init__(self, etcd: Etcd, keys: Keys, on_change: Callable[[], None]) -> None:
        self.etcd = etcd
        self.keys = keys
        self.on_change = on_change
        self.ready = False
        self.docs: dict[str, tuple[BudgetSpec, int]] = {}  # name -> (document, mod revision)
        self.held: dict[str, dict[int, str]] = {}  # name -> slot index -> run id
        self.windows: dict[str, tuple[Window | None, int]] = {}  # name -> (window, mod revision)
        # every budget document written up to this revision is in ``docs`` (D365)
        self.docs_revision = 0
        self._docs_read_at = 0  # the last such read of the documents out of the watch's turn
        self.claiming: set[str] = set()  # budgets with a claim of this node in flight
        self.waiting: dict[str, set[str]] = {}  # name -> runs held back at the last look
        self._joined: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[str]] = {}

    # -- the cache -------------------------------------------------------------------------

    async def run(self) -> None:
        """Read every budget key, then follow them; start over when the watch breaks."""
        base = self.keys.budget_all()
        delay = 0.1
        while True:
            try:
                res = await self.etcd.range_all(base)
                self.docs.clear()
                self._joined.clear()
                self.held.clear()
                self.windows.clear()
                for kv in res.kvs:
                    self._apply(kv.key, kv)
                self.docs_revision = res.revision
                self.ready = True
                self._changed()
                async for batch in self.etcd.watch(base, start_revision=res.revision + 1):
                    delay = 0.1
                    for ev in batch.events:
                        if ev.kv.mod_revision <= self._docs_read_at and self._is_doc(ev.kv.key):
                            continue  # older than the documents a refused claim read (D365)
                        self._apply(ev.kv.key, ev.kv if ev.kind == "put" else None)
                    self.docs_revision = max(self.docs_revision, batch.revision)
                    self._changed()
            except (Unavailable, Compacted) as exc:
                log.info("budget watch interrupted; re-reading", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _changed(self) -> None:
        for name, (doc, _) in self.docs.items():
            if doc.concurrent is not None:
                metrics.BUDGET_IN_USE.labels(name).set(len(self.held.get(name, ())))
        self.on_change()

    def _apply(self, key: str, kv: KV | None) -> None:
        docs, slots = self.keys.budgets(), self.keys.budget_slots()
        starts = self.keys.budget_starts("")
        try:
            if key.startswith(docs):
                self._joined.clear()
                name = key[len(docs) :]
                if kv is None:
                    self.docs.pop(name, None)
                    self._forget(name)
                else:
                    self.docs[name] = (Budget.model_validate_json(kv.value), kv.mod_revision)
            elif key.startswith(slots):
                name, _, index = key[len(slots) :].rpartition("/")
                held = self.held.setdefault(name, {})
                if kv is None:
                    held.pop(int(index), None)
                else:
                    held[int(index)] = kv.value.decode()
            elif key.startswith(starts):
                name = key[len(starts) :]
                if kv is None:
                    self.windows.pop(name, None)
                else:
                    self.windows[name] = (Window.model_validate_json(kv.value), kv.mod_revision)
        except ValueError as exc:
            log.error("unreadable budget key", key=key, error=str(exc))

    def _forget(self, name: str) -> None:
        self.waiting.pop(name, None)
        for gauge in (metrics.BUDGET_IN_USE, metrics.BUDGET_WAITING):
            try:
                gauge.remove(name)
            except KeyError:
                pass

    def held_by(self, run_id: str) -> list[str]:
        """The slot keys a run holds (an adopted claim's, D2)."""
        return [
            self.keys.budget_slot(name, i)
            for name, held in self.held.items()
            for i, rid in held.items()
            if rid == run_id
        ]

    # -- ordering against the queue (D365) ----------------------------------------------------

    def guard(self, seen: int | None = None) -> Any:
        """Every claim's compare: no budget document was written after the cache's revision.
        The budgets and the queue are two watches that etcd does not order: a run queued just
        after a budget was created (or widened, or named by its job) could reach this worker
        first and be claimed outside it. A budget deleted meanwhile passes (it limits nothing).
        ``seen``: the revision the claim's decision (:meth:`look`) read the documents at; the
        watch may move the cache on before the claim goes out (D469)."""
        return Compare.unchanged_since(
            self.keys.budgets(), self.docs_revision if seen is None else seen
        )

    def probe(self) -> Any:
        """The claim's read, when it fails, of the budget documents' revisions."""
        return Op.get(self.keys.budgets(), prefix=True, keys_only=True)

    async def catch_up(self, probed: list[KV]) -> bool:
        """A refused claim's probe shows a budget document newer than the cache: read them
        all now rather than wait for the watch; True if it did."""
        if all(kv.mod_revision <= self.docs_revision for kv in probed):
            return False
        res = await self.etcd.range_all(self.keys.budgets())
        if res.revision <= self.docs_revision:
            return False
        names = set()
        for kv in res.kvs:
            names.add(kv.key[len(self.keys.budgets()) :])
            self._apply(kv.key, kv)
        for name in set(self.docs) - names:
            self._apply(self.keys.budget(name), None)
        self.docs_revision = self._docs_read_at = res.revision
        log.info("budgets changed under a claim; read them again", budgets=len(names))
        self._changed()
        return True

    def _is_doc(self, key: str) -> bool:
        return key.startswith(self.keys.budgets())

    # -- decisions -------------------------------------------------------------------------

    def joined(self, run: Run) -> list[str]:
        """The budgets ``run`` joins; remembered per (project, names, tags) until a budget
        document changes (dispatch asks for every queued run each time it looks)."""
        spec = run.snapshot
        if not self.docs or not (spec.budgets or spec.tags):
            return []
        key = (run.project, tuple(spec.budgets), tuple(spec.tags))
        found = self._joined.get(key)
        if found is None:
            if len(self._joined) >= JOINED_KEPT:
                self._joined.clear()
            docs = {n: d for n, (d, _) in self.docs.items()}
            found = self._joined[key] = joined(docs, spec.budgets, spec.tags, run.project)
        return found

    def look(self, run: Run, now: datetime) -> Plan | Wait | None:
        """None: no budget applies; a Wait: held back (why, and until when for a window); a
        Plan: the compares and writes to add to the claim. A budget with a claim of this node
        in flight holds the run back until that claim's answer (two could pick one slot).
        A start is counted in the window of ``now``, and the claim records ``now`` as the run's
        start (``Plan.at``, D468)."""
        names = self.joined(run)
        if not names:
            return None
        plan = Plan(names, now)
        for name in names:
            doc, doc_rev = self.docs[name]
            held = self.held.get(name, {})
            window, window_rev = self.windows.get(name, (None, 0))
            wait = check(name, doc, len(held), window, now, run.project)
            if wait is None and name in self.claiming:
                wait = Wait(name, f"budget {name}: a claim in flight")
            if wait is not None:
                self._waits(name, run.id)
                return wait
            plan.compares.append(Compare.modified(self.keys.budget(name), doc_rev))
            if doc.concurrent is not None:
                index = free_slot(doc.concurrent, held)
                if index is None:  # held slots above a lowered limit: count says yes, none free
                    self._waits(name, run.id)
                    return Wait(name, f"budget {name}: {len(held)}/{doc.concurrent} running")
                slot = self.keys.budget_slot(name, index)
                plan.compares.append(Compare.absent(slot))
                plan.slots.append(slot)
            if doc.starts is not None:
                verdict = admit_start(window, doc.starts, now)
                starts = self.keys.budget_starts(name)
                plan.compares.append(Compare.modified(starts, window_rev))
                plan.ops.append(Op.put(starts, verdict.window.model_dump_json()))
                plan.windows[name] = verdict.window
        return plan

    def counts_starts(self, run: Run) -> bool:
        """Whether a budget ``run`` joins limits starts per window: such a run is never claimed
        ahead of its instant (its recorded start would be its release, D468)."""
        return any(self.docs[name][0].starts is not None for name in self.joined(run))

    def ops(self, plan: Plan, run_id: str, lease: int) -> list[Any]:
        """The claim's writes: each taken slot (bound to the lease), each new window count."""
        return [*plan.ops, *(Op.put(slot, run_id, lease) for slot in plan.slots)]

    @staticmethod
    def releases(slots: Iterable[str]) -> list[Any]:
        """The completion's deletes of the slots a run held."""
        return [Op.delete(slot) for slot in slots]

    def _waits(self, name: str, run_id: str) -> None:
        self.waiting.setdefault(name, set()).add(run_id)

    def publish(self) -> None:
        """The waiting gauges: runs this node held back at its last dispatch pass."""
        for name in self.docs:
            metrics.BUDGET_WAITING.labels(name).set(len(self.waiting.get(name, ())))

    # -- claims ----------------------------------------------------------------------------

    def begin(self, plan: Plan) -> None:
        self.claiming.update(plan.budgets)

    def end(self, plan: Plan, run_id: str, revision: int | None) -> None:
        """The claim answered (``revision``: it succeeded, at that revision). The cache takes
        the writes at once so the next look does not wait for the watch to echo them."""
        self.claiming.difference_update(plan.budgets)
        if revision is None:
            return
        slots = self.keys.budget_slots()
        for slot in plan.slots:
            name, _, index = slot[len(slots) :].rpartition("/")
            self.held.setdefault(name, {})[int(index)] = run_id
        for name, window in plan.windows.items():
            self.windows[name] = (window, revision)
