"""Cross-job dependencies against etcd (D293-D295): the guards a job's write carries (unknown
upstream, cycles), the look at a waiting slot's upstreams (their tick records and runs), and the
writes that end a waiting slot. The decisions are ``cluster.depends``'s; this module reads and
builds ops."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cluster import outcomes
from cluster.depends import (
    Judgement,
    SlotState,
    Waiting,
    Window,
    cycle_text,
    expected_slots,
    find_cycle,
    gate_of,
    judge,
    slot_run,
    slot_state,
    window_of,
)
from cluster.depends_spec import MAX_CHAIN, MAX_UPSTREAM_SLOTS, MAX_WAIT_DEFAULT, Upstream, label
from cluster.errors import InvalidInput
from cluster.etcd import Compare, Etcd, Op
from cluster.keys import Keys
from cluster.models import Job, Run, ScheduleSpec
from cluster.slotlog import OpenSlot, event_ops, open_slot_value, settled_record
from cluster.workflows import Execution, Workflow

Doc = Job | Workflow
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops (cluster.store's; the store imports us)


def _key(keys: Keys, project: str, node: Upstream) -> str:
    kind, name = node
    return keys.job(project, name) if kind == "job" else keys.workflow(project, name)


def upstreams_of(schedules: Sequence[ScheduleSpec]) -> list[tuple[str, Upstream]]:
    """(field, upstream) of every dependency of every schedule (enabled or not)."""
    return [
        (f"schedules.{i}.depends_on.{j}.{dep.upstream[0]}", dep.upstream)
        for i, spec in enumerate(schedules)
        for j, dep in enumerate(spec.depends_on)
    ]


async def _read(etcd: Etcd, keys: Keys, project: str, nodes: list[Upstream]) -> dict[Upstream, Any]:
    out: dict[Upstream, Any] = {}
    for i in range(0, len(nodes), MAX_TXN_OPS):
        chunk = nodes[i : i + MAX_TXN_OPS]
        res = await etcd.txn([], [Op.get(_key(keys, project, n)) for n in chunk])
        for j, node in enumerate(chunk):
            kvs = res.range_kvs(j)
            if kvs:
                out[node] = kvs[0]
    return out


def _deps(node: Upstream, value: bytes) -> list[Upstream]:
    doc = json.loads(value)
    return [
        ("workflow", d["workflow"]) if d.get("workflow") else ("job", d.get("job") or "")
        for s in doc.get("schedules", [])
        for d in s.get("depends_on", []) or []
    ]


async def depends_guards(
    etcd: Etcd, keys: Keys, project: str, me: Upstream, schedules: Sequence[ScheduleSpec]
) -> list[Any]:
    """Compares that keep the upstreams a document names, and every document on its upstream
    chains, as read: an unknown upstream is a 400 naming its field; a chain back to the document
    itself is a 400 naming the cycle (``depends_on cycle: a → b → a``). A concurrent write that
    closes a cycle changes one of the compared documents, so one of the two writes fails and
    re-reads (the caller's retry)."""
    refs = upstreams_of(schedules)
    if not refs:
        return []
    edges: dict[Upstream, list[Upstream]] = {me: [n for _, n in refs]}
    guards: list[Any] = []
    frontier = sorted({n for _, n in refs} - {me})
    seen: set[Upstream] = {me}
    found: dict[Upstream, Any] = {}
    while frontier:
        if len(seen) + len(frontier) > MAX_CHAIN:
            raise InvalidInput(
                f"depends_on: the upstream chains hold more than {MAX_CHAIN} jobs and workflows",
                field=refs[0][0],
            )
        seen.update(frontier)
        got = await _read(etcd, keys, project, frontier)
        found.update(got)
        nxt: set[Upstream] = set()
        for node in frontier:
            kv = got.get(node)
            if kv is None:
                continue
            guards.append(Compare.modified(kv.key, kv.mod_revision))
            edges[node] = _deps(node, kv.value)
            nxt.update(n for n in edges[node] if n not in seen)
        frontier = sorted(nxt)
    for field, node in refs:
        if node != me and node not in found:
            kind = "workflow" if node[0] == "workflow" else "job"
            raise InvalidInput(
                f"{field}: no {kind} {node[1]!r} in project {project!r}", field=field
            )
    path = find_cycle(me, edges)
    if path is not None:
        field = next(f for f, n in refs if n == path[1])
        raise InvalidInput(f"{field}: {cycle_text(path)}", field=field)
    return guards


# -- a waiting slot's upstreams ------------------------------------------------------------------


def _slot_key(keys: Keys, project: str, node: Upstream, fp: str, tick: datetime) -> str:
    ms = int(tick.timestamp() * 1000)
    if node[0] == "job":
        return keys.tick(project, node[1], fp, ms)
    return keys.workflow_tick(project, node[1], fp, ms)


async def _records(
    etcd: Etcd, keys: Keys, project: str, node: Upstream, first: datetime, last: datetime
) -> dict[str, dict[str, Any]]:
    """The upstream's tick records from ``first`` to ``last`` (inclusive), by key: one range."""
    base = (
        keys.ticks(project, node[1]) if node[0] == "job" else keys.workflow_ticks(project, node[1])
    )
    lo, hi = int(first.timestamp() * 1000), int(last.timestamp() * 1000) + 1
    res = await etcd.range(
        f"{base}{lo:015d}", prefix=False, end=f"{base}{hi:015d}", limit=4 * MAX_UPSTREAM_SLOTS
    )
    return {kv.key: json.loads(kv.value) for kv in res.kvs}


async def _oldest_record(etcd: Etcd, keys: Keys, project: str, node: Upstream) -> datetime | None:
    """The instant of the upstream's oldest tick record still kept (None: it has none)."""
    base = (
        keys.ticks(project, node[1]) if node[0] == "job" else keys.workflow_ticks(project, node[1])
    )
    res = await etcd.range(base, limit=1, keys_only=True)
    if not res.kvs:
        return None
    ms = res.kvs[0].key[len(base) :].split("-", 1)[0]
    return datetime.fromtimestamp(int(ms) / 1000, UTC) if ms.isdigit() else None


async def _statuses(
    etcd: Etcd, keys: Keys, project: str, node: Upstream, ids: list[str]
) -> dict[str, str]:
    """The status of each run (the job's run index) or execution (its record)."""
    out: dict[str, str] = {}
    for i in range(0, len(ids), MAX_TXN_OPS):
        chunk = ids[i : i + MAX_TXN_OPS]
        if node[0] == "job":
            gets = [Op.get(keys.job_run(project, node[1], r)) for r in chunk]
        else:
            gets = [Op.get(keys.execution(project, r)) for r in chunk]
        res = await etcd.txn([], gets)
        for j, rid in enumerate(chunk):
            kvs = res.range_kvs(j)
            if not kvs:
                continue
            if node[0] == "job":
                out[rid] = kvs[0].value.decode()
            else:
                status = Execution.model_validate_json(kvs[0].value).status
                out[rid] = "pending" if status in ("queued", "running") else status
    return out


async def judge_dependency(
    etcd: Etcd,
    keys: Keys,
    project: str,
    dep: Any,
    spec: ScheduleSpec,
    waiting: Waiting,
) -> Judgement:
    """One dependency of a waiting slot, as etcd has its upstream now."""
    node: Upstream = dep.upstream
    window = window_of(dep.window, waiting.tick, spec.timezone, waiting.previous, waiting.since)
    got = await _read(etcd, keys, project, [node])
    kv = got.get(node)
    if kv is None:
        return Judgement(label(node), dep.require, window, False, note="upstream not found")
    doc: Doc = (Job if node[0] == "job" else Workflow).model_validate_json(kv.value)
    if not doc.enabled:
        return Judgement(label(node), dep.require, window, False, note="upstream disabled")
    expected, cut = _expected(project, node, doc, window)
    records: dict[str, dict[str, Any]] = {}
    if expected:
        records = await _records(etcd, keys, project, node, expected[0][0], expected[-1][0])
    # a deferred slot's run went at the window's end, under its own key (D238)
    chosen: list[tuple[datetime, dict[str, Any] | None]] = []
    later: list[tuple[int, str]] = []
    for i, (tick, fp) in enumerate(expected):
        rec = records.get(_slot_key(keys, project, node, fp, tick))
        chosen.append((tick, rec))
        if rec is not None and rec.get("deferred_to") and not slot_run(rec):
            to = datetime.fromisoformat(rec["deferred_to"])
            later.append((i, _slot_key(keys, project, node, f"{fp}-deferred", to)))
    if later:
        res = await etcd.txn([], [Op.get(k) for _, k in later[:MAX_TXN_OPS]])
        for j, (i, _) in enumerate(later[:MAX_TXN_OPS]):
            kvs = res.range_kvs(j)
            chosen[i] = (chosen[i][0], json.loads(kvs[0].value) if kvs else None)
    ids = sorted({r for _, rec in chosen if rec is not None and (r := _run_of(rec))})
    statuses = await _statuses(etcd, keys, project, node, ids)
    # retention keeps a job's newest tick records only (keep_runs x 2): a slot older than the
    # oldest kept has no record because it was pruned, not because its time has not come
    pruned: set[int] = set()
    if any(rec is None for _, rec in chosen):
        oldest = await _oldest_record(etcd, keys, project, node)
        pruned = {i for i, (t, rec) in enumerate(chosen) if rec is None and oldest and t < oldest}
    states: list[tuple[datetime, SlotState]] = [
        (tick, "failed")
        if i in pruned
        else (tick, slot_state(rec, statuses.get(_run_of(rec) or "") if rec else None))
        for i, (tick, rec) in enumerate(chosen)
    ]
    out = judge(dep.require, label(node), window, states)
    notes = []
    if pruned:
        notes.append(f"{len(pruned)} upstream slot record(s) no longer kept (counted failed)")
    gone = sum(1 for r in ids if r not in statuses)
    if gone:  # pruned by the upstream's keep_runs: its status is not known any more
        notes.append(f"{gone} upstream run(s) no longer kept (counted failed; raise keep_runs)")
    if cut:
        notes.append(f"only the first {MAX_UPSTREAM_SLOTS} slots of the window are counted")
    out.note = "; ".join(notes)
    return out


# The upstream slots of a window depend only on the upstream's schedules, its active_since and
# the window: every look at a waiter (one per upstream event) would recompute them with the cron
# engine (85 ms for 1000 slots of a seconds cron), so they are kept. Bounded: cleared when full,
# by entries and by the slots they hold in all: 4096 entries of 1000 slots each were ~460 MB of
# the leader's memory (112 bytes a slot, measured); 200,000 slots are ~22 MB.
_EXPECTED: dict[tuple[Any, ...], tuple[list[tuple[datetime, str]], bool]] = {}
_EXPECTED_SLOTS = [0]  # the slots _EXPECTED holds
EXPECTED_KEPT = 4096
EXPECTED_SLOTS_KEPT = 200_000


def _expected(
    project: str, node: Upstream, doc: Doc, window: Window
) -> tuple[list[tuple[datetime, str]], bool]:
    specs = [s for s in doc.schedules if s.enabled]
    key = (project, node, tuple(s.fingerprint() for s in specs), doc.active_since, window)
    got = _EXPECTED.get(key)
    if got is None:
        hash_key = f"{project}/{node[1]}" if node[0] == "job" else f"wf/{project}/{node[1]}"
        scheds = [(s.fingerprint(), s.parse(hash_key)) for s in specs]
        got = expected_slots(scheds, window, doc.active_since)
        size = len(got[0])
        if len(_EXPECTED) >= EXPECTED_KEPT or _EXPECTED_SLOTS[0] + size > EXPECTED_SLOTS_KEPT:
            _EXPECTED.clear()
            _EXPECTED_SLOTS[0] = 0
        _EXPECTED[key] = got
        _EXPECTED_SLOTS[0] += size
    return got


def _run_of(rec: dict[str, Any]) -> str | None:
    run = slot_run(rec)
    if run is None and isinstance(rec.get("execution"), str):
        return str(rec["execution"])
    return run


async def judge_waiting(
    etcd: Etcd, keys: Keys, project: str, spec: ScheduleSpec, waiting: Waiting
) -> list[Judgement]:
    return [await judge_dependency(etcd, keys, project, d, spec, waiting) for d in spec.depends_on]


def spec_of(job: Job | Workflow, fp: str) -> ScheduleSpec | None:
    """The job's schedule with fingerprint ``fp`` (None: changed or removed since)."""
    return next((s for s in job.schedules if s.fingerprint() == fp), None)


# -- ending a waiting slot ----------------------------------------------------------------------


def waited_doc(judgements: list[Judgement], gate: datetime | None) -> dict[str, Any]:
    return {
        "depends_on": [j.doc() for j in judgements],
        "not_before": gate.isoformat() if gate else None,
    }


def end_ops(
    keys: Keys,
    w: Waiting,
    outcome: str,
    reason: str,
    waited: dict[str, Any],
    now: datetime,
) -> list[Any]:
    """Delete the waiting key and settle its slot without a run."""
    return [
        Op.delete(w.key),
        Op.put(
            w.tick_key,
            settled_record(
                w.tick,
                w.schedule,
                w.fate,
                None,
                outcome,
                reason,
                waited=waited,
                settled_at=now.isoformat(),
            ),
        ),
    ]


def alarm_ops(keys: Keys, w: Waiting, outcome: str, reason: str) -> list[Any]:
    """A bad end's slot alarm and notification outbox entry, as the slot watcher writes them
    (D232: notified as ``deadline_missed``)."""
    slot = OpenSlot(
        key=w.key,
        jk=(w.project, w.job),
        name=w.name,
        slot=outcomes.SlotDeadlines(w.tick, None, None, w.fate),
        run=None,
        fate=w.fate,
        schedule=w.schedule,
        rev=w.rev,
    )
    event = outcome if outcome == outcomes.DEADLINE_MISSED.name else "deadline_missed"
    return [
        Op.put(keys.slot_alarm(w.project, w.job), outcome),
        *event_ops(keys, slot, event, outcome, reason),
    ]


def release_record_ops(
    keys: Keys,
    w: Waiting,
    run_id: str,
    deadlines: tuple[float, float] | None,
    waited: dict[str, Any],
    now: datetime,
) -> list[Any]:
    """The slot's tick record once its run is created: settled ``fired`` without deadlines, else
    open with the open-slot key the slot watcher settles (deadlines count from the slot's
    instant, so the wait counts against ``start_within``)."""
    settled = deadlines is None
    record = settled_record(
        w.tick,
        w.schedule,
        w.fate,
        run_id,
        outcomes.outcome_of_fate(w.fate) if settled else None,
        "upstreams met" if settled else "",
        waited=waited,
        released_at=now.isoformat(),
    )
    ops = [Op.put(w.tick_key, record)]
    if deadlines is not None:
        value = open_slot_value(w.tick, w.schedule, w.fate, run_id, deadlines)
        ops.append(Op.put(keys.open_slot(w.project, w.job, w.name), value))
    return ops


def remint(new_run: Callable[..., Run], job: Job, spec: ScheduleSpec, minted: Run) -> Run:
    """The run a released slot creates: minted again from the job as it is now (D334: an edit
    while the slot waited applies, and the run-history quota), with the id and ``created_at``
    fixed when the tick fired."""
    run = new_run(
        job,
        source=minted.source,
        parameters=spec.parameters,
        scheduled_at=minted.scheduled_at,
        schedule=minted.schedule,
    )
    return run.model_copy(update={"id": minted.id, "created_at": minted.created_at})


def give_up_at(w: Waiting, spec: ScheduleSpec | None, default: float) -> datetime:
    return w.tick + timedelta(seconds=(spec.max_wait if spec and spec.max_wait else default))


async def waiting_view(
    etcd: Etcd, keys: Keys, job: Job | Workflow, name: str, now: datetime
) -> dict[str, Any] | None:
    """What a waiting slot waits for, as etcd has its upstreams now (the API's view, D295):
    each dependency's window, whether it is met, its slots by state and the missing ones, and
    the time gate and when the slot gives up."""
    slot_job = job.name if isinstance(job, Job) else f"@{job.name}"
    kv = await etcd.get(keys.waiting(job.project, slot_job, name))
    if kv is None:
        return None
    w = Waiting.parse(kv.key, job.project, slot_job, name, kv.value, kv.mod_revision)
    spec = spec_of(job, w.schedule)
    if spec is None:
        return {"depends_on": [], "not_before": None, "note": "its schedule changed"}
    judgements = await judge_waiting(etcd, keys, job.project, spec, w)
    gate = gate_of(spec.not_before, w.tick, spec.timezone)
    doc = waited_doc(judgements, gate)
    doc["gate_passed"] = gate is None or now >= gate
    doc["gives_up_at"] = give_up_at(w, spec, MAX_WAIT_DEFAULT).isoformat()
    return doc
