"""The leader's workflow schedules: one execution per due tick (the same catch-up rules as jobs),
in one fenced transaction that compares the schedule state, the workflow document the plan used
(D372) and the rules snapshot (D339), and creates the tick keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from cluster.cron import Schedule
from cluster.election import Leadership
from cluster.etcd import Compare, Etcd, Op
from cluster.keys import Keys
from cluster.plan import plan_schedule
from cluster.store import Store, dumps
from cluster.workflow_store import new_execution
from cluster.workflows import Execution, Workflow
from nodes.leader.rulecache import RuleCache
from nodes.leader.wfwait import workflow_slot_ops

log = structlog.get_logger(__name__)

WfKey = tuple[str, str]  # (project, workflow)
PER_TXN = 8  # a schedule's due ticks per transaction (the rest at once after)


class WorkflowTicks:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        store: Store,
        leadership: Leadership,
        *,
        clock: Callable[[], datetime],
        rules: RuleCache,
    ) -> None:
        self.etcd, self.keys, self.store, self.lead = etcd, keys, store, leadership
        self.clock, self.rules = clock, rules

    async def fire(self, wk: WfKey) -> datetime | None:
        """Plan the due ticks of a workflow; answers when to look again (None: not scheduled).

        The document is read here, not taken from the watch cache: a workflow disabled or
        edited just before its tick is planned as it is now, and the transaction compares that
        revision (D372). Ticks are few; the read is one per workflow tick."""
        doc_key = self.keys.workflow(*wk)
        doc = await self.etcd.get(doc_key)
        if doc is None:
            return None  # deleted: the watch drops it
        wf = Workflow.model_validate_json(doc.value)
        if not wf.enabled:
            return None
        schedules: list[tuple[str, Schedule, Any]] = [
            (s.fingerprint(), s.parse(f"wf/{wf.project}/{wf.name}"), s)
            for s in wf.schedules
            if s.enabled
        ]
        if not schedules:
            return None
        state_key = self.keys.workflow_schedule_state(*wk)
        kv = await self.etcd.get(state_key)
        state: dict[str, Any] = json.loads(kv.value) if kv else {}
        rev = kv.mod_revision if kv else 0
        now = self.clock()
        sched_state: dict[str, Any] = state.setdefault("schedules", {})
        execs: list[tuple[Execution, str]] = []
        skips: list[tuple[Any, Any]] = []  # ticks the cluster freeze skips: (compare, op)
        next_due: datetime | None = None
        for fp, sched, spec in schedules:
            last = sched_state.get(fp, {}).get("last_tick")
            plan = plan_schedule(
                sched,
                last_tick=datetime.fromisoformat(last) if last else None,
                active_since=wf.active_since,
                now=now,
                catchup=wf.catchup,
                starting_deadline=wf.starting_deadline,
                limit=wf.catchup_limit,
            )
            due = plan.fire[:PER_TXN]
            for tick, source in self.rules.skip_frozen(wk, fp, due, skips):
                ex = new_execution(
                    self.store, wf, parameters=spec.parameters, source=source, scheduled_at=tick
                )
                tick_key = self.keys.workflow_tick(*wk, fp, int(tick.timestamp() * 1000))
                execs.append((ex, tick_key))
            if plan.last_tick is not None:
                newest = due[-1][0] if len(plan.fire) > PER_TXN else plan.last_tick
                sched_state[fp] = {"last_tick": newest.isoformat()}
            if len(plan.fire) > PER_TXN:
                next_due = now
            elif plan.next_due is not None:
                next_due = plan.next_due if next_due is None else min(next_due, plan.next_due)
        live = {fp for fp, _, _ in schedules}
        for fp in list(sched_state):
            if fp not in live:
                del sched_state[fp]
        compares = [
            self.lead.fence(),
            Compare.modified(state_key, rev),
            Compare.modified(doc_key, doc.mod_revision),  # the document as planned (D372)
            self.rules.guard(),
        ]
        ops: list[Any] = [Op.put(state_key, dumps(state)), *(op for _, op in skips)]
        compares += [c for c, _ in skips]
        for ex, tick_key in execs:  # the slot's record (D234), or its held slot (D296)
            compares.append(Compare.absent(tick_key))
            ops += await workflow_slot_ops(self.etcd, self.keys, wf, ex, tick_key)
        res = await self.etcd.txn(compares, ops, [self.lead.probe()])
        if not res.succeeded:
            self.lead.check_fenced(res, "fenced workflow tick rejected")
            await self.rules.catch_up()  # when a rule changed since the snapshot (D339)
            return self.clock() + timedelta(seconds=0.05)
        for ex, _ in execs:
            log.info("workflow tick fired", workflow=wf.name, execution=ex.id, tick=ex.scheduled_at)
        return next_due
