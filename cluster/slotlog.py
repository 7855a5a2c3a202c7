"""The slot log's records (D230), built as values: a tick record with its slot's outcome, the
open-slot record of a slot whose deadlines the leader watches, and the ops that write a handled
tick. No I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cluster import outcomes
from cluster.etcd import Op
from cluster.keys import Keys
from cluster.models import Run
from cluster.outcomes import WithDeadlines, slot_deadlines

if TYPE_CHECKING:
    from cluster.workflows import Execution


@dataclass
class OpenSlot:
    key: str  # the open-slot key
    jk: tuple[str, str]
    name: str  # "<epoch ms>-<schedule fingerprint>" (the tick key's last part)
    slot: outcomes.SlotDeadlines
    run: str | None
    fate: str
    schedule: str
    rev: int
    every: float = 0.0  # a freshness slot: expected_every …
    since: datetime | None = None  # … counted from here
    stale: bool = False  # … and the period before it went stale
    execution: str | None = None  # a workflow's slot (its job is "@<workflow>", D234)

    @classmethod
    def parse(cls, key: str, jk: tuple[str, str], name: str, value: bytes, rev: int) -> OpenSlot:
        """An open-slot key as written by :func:`open_slot_value`."""
        doc = json.loads(value)
        tick = datetime.fromisoformat(doc["tick"])
        fate = doc.get("fate", "schedule")
        return cls(
            key,
            jk,
            name,
            outcomes.SlotDeadlines.of(tick, doc["start_within"], doc["succeed_within"], fate),
            doc.get("run"),
            fate,
            doc.get("schedule", ""),
            rev,
            float(doc.get("every") or 0),
            datetime.fromisoformat(doc["since"]) if doc.get("since") else None,
            bool(doc.get("stale")),
            doc.get("execution"),
        )

    @property
    def fresh(self) -> bool:
        return self.schedule == outcomes.FRESHNESS


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), default=str)


def open_slot_value(
    tick: datetime,
    schedule: str,
    fate: str,
    run_id: str | None,
    deadlines: tuple[float, float],
    *,
    every: float = 0.0,
    since: datetime | None = None,
    stale: bool = False,
    execution: str | None = None,
) -> str:
    doc: dict[str, Any] = {
        "tick": tick.isoformat(),
        "schedule": schedule,
        "fate": fate,
        "run": run_id,
        "start_within": deadlines[0],
        "succeed_within": deadlines[1],
    }
    if execution is not None:
        doc["execution"] = execution
    if every:
        doc.update(every=every, since=since.isoformat() if since else None, stale=stale)
    return dumps(doc)


def slot_name(tick: datetime, schedule: str) -> str:
    return f"{int(tick.timestamp() * 1000):015d}-{schedule}"


def settled_record(
    tick: datetime,
    schedule: str,
    fate: str,
    run_id: str | None,
    outcome: str | None,
    reason: str = "",
    **extra: Any,
) -> str:
    """A tick record with its slot's outcome (None: open, the leader watches its deadlines)."""
    doc: dict[str, Any] = {
        "tick": tick.isoformat(),
        "schedule": schedule,
        "fate": fate,
        "run": run_id,
        "outcome": outcome,
        "reason": reason,
    }
    doc.update(extra)
    return dumps(doc)


def tick_ops(
    keys: Keys, run: Run, tick_key: str, fate: str, deadlines: tuple[float, float] | None
) -> list[Any]:
    """The tick record of a handled tick: settled now when its schedule has no deadlines (its
    outcome follows from its fate), else open, with the open-slot key the leader watches."""
    tick, fp = run.scheduled_at or run.created_at, run.schedule or ""
    if deadlines is None:
        outcome = outcomes.outcome_of_fate(fate)
        return [Op.put(tick_key, settled_record(tick, fp, fate, run.id, outcome, run.error or ""))]
    return [
        Op.put(tick_key, settled_record(tick, fp, fate, run.id, None)),
        Op.put(
            # named as its tick key (a deferred run's ends ``-<fp>-deferred``, D238)
            keys.open_slot(run.project, run.job, tick_key.rsplit("/", 1)[-1]),
            open_slot_value(tick, fp, fate, run.id, deadlines),
        ),
    ]


def workflow_slot_job(workflow: str) -> str:
    """The "job" a workflow's slots go by in open-slot keys and metrics: ``@<workflow>`` (no job
    name starts with ``@``)."""
    return f"@{workflow}"


def workflow_tick_ops(keys: Keys, wf: WithDeadlines, ex: Execution, tick_key: str) -> list[Any]:
    """A workflow tick's record (its execution, and its slot's outcome or open state) and, when
    its schedule has deadlines, the open-slot key the leader watches (D234)."""
    tick, fp = ex.scheduled_at or ex.created_at, tick_key.rsplit("-", 1)[1]
    deadlines = slot_deadlines(wf).get(fp)
    fate = ex.source
    outcome = None if deadlines else outcomes.outcome_of_fate(fate)
    record = settled_record(tick, fp, fate, None, outcome, execution=ex.id)
    ops: list[Any] = [Op.put(tick_key, record)]
    if deadlines:
        name = slot_name(tick, fp)
        value = open_slot_value(tick, fp, fate, None, deadlines, execution=ex.id)
        ops.append(Op.put(keys.open_slot(ex.project, workflow_slot_job(ex.workflow), name), value))
    return ops


def event_ops(keys: Keys, slot: OpenSlot, event: str, outcome: str, reason: str) -> list[Any]:
    """The outbox entry of one slot event (D232): written with the outcome, deleted once sent.
    The payload's run has the slot's outcome as its status (a slot may have no run)."""
    project, job = slot.jk
    entry = f"{project}/{job}/{slot.name}-{event}"
    doc = {
        "id": slot.run,  # None for a slot without a run (links: the job's page)
        "project": project,
        "job": job,
        "status": outcome,
        "execution": slot.execution,
        "source": slot.fate,
        "scheduled_at": slot.slot.due.isoformat(),
        "error": reason,
        "slot": {
            "tick": slot.slot.due.isoformat(),
            "schedule": slot.schedule,
            "outcome": outcome,
            "reason": reason,
            "run": slot.run,
        },
    }
    payload = {"event": event, "doc": doc, "delivery": f"slot-{entry}"}
    return [Op.put(keys.slot_outbox(entry), dumps(payload))]
