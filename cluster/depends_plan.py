"""A job's plan with its dependent slots held back (D294), as a value (pure).

The planner (``cluster.tickplan.plan_job``) mints one run per slot it fires. A slot of a schedule
with ``depends_on`` or ``not_before`` does not create its run: it is *held* — its tick record is
written open (``outcome: null, run: null, waiting: true``) and a ``waiting/<project>/<job>/<slot
name>`` key keeps the minted run, both as records of the plan, so they go in the job's one fenced
transaction with an absent-compare each, like every tick (a leader killed between "the tick was
handled" and "the slot waits" cannot exist). Over the waiting quota, the slot ends at once
``skipped_waiting_quota``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from cluster.depends import SKIPPED_WAITING_QUOTA, Waiting, previous_fire
from cluster.depends_spec import Upstream
from cluster.etcd import Op
from cluster.keys import Keys
from cluster.models import Job, ScheduleSpec
from cluster.slotlog import settled_record, workflow_slot_job
from cluster.tickplan import JobPlan
from cluster.workflows import Execution, Workflow

MAX_WAITING_PER_JOB = 100
MAX_WAITING_PER_PROJECT = 1000


def upstreams_of_fp(schedules: list[ScheduleSpec], fp: str) -> list[Upstream]:
    spec = next((s for s in schedules if s.fingerprint() == fp), None)
    return [d.upstream for d in spec.depends_on] if spec is not None else []


def waits(spec: ScheduleSpec) -> bool:
    return spec.enabled and bool(spec.depends_on or spec.not_before)


def hold_execution(
    keys: Keys, wf: Workflow, ex: Execution, tick_key: str, *, waiting: tuple[int, int]
) -> list[Any] | None:
    """A workflow's slot that waits (D296): the ops of its held tick (open record, waiting key
    under the job name ``@<workflow>`` with the execution to create), or of its end over the
    quota; None when its schedule does not wait. ``waiting``: (this workflow's, the project's)
    waiting slots now."""
    fp = tick_key.rsplit("-", 1)[1]
    spec = next((s for s in wf.schedules if s.fingerprint() == fp), None)
    tick = ex.scheduled_at
    if spec is None or tick is None or not waits(spec):
        return None
    name = tick_key.rsplit("/", 1)[-1]
    if waiting[0] >= MAX_WAITING_PER_JOB or waiting[1] >= MAX_WAITING_PER_PROJECT:
        reason = "too many slots already wait on their upstreams (the waiting quota)"
        out = SKIPPED_WAITING_QUOTA.name
        rec = settled_record(tick, fp, ex.source, None, out, reason, execution=None)
        return [Op.put(tick_key, rec)]
    sched = spec.parse(f"wf/{wf.project}/{wf.name}")
    job = workflow_slot_job(wf.name)
    w = Waiting(
        keys.waiting(wf.project, job, name),
        wf.project,
        job,
        name,
        tick,
        fp,
        ex.source,
        json.loads(ex.model_dump_json()),
        tick_key,
        previous_fire(sched, tick, wf.active_since),
        wf.active_since,
        upstreams=[d.upstream for d in spec.depends_on],
    )
    doc = json.loads(settled_record(tick, fp, ex.source, None, None, "waiting on upstreams"))
    doc.update(waiting=True, execution=None)
    return [Op.put(tick_key, json.dumps(doc, separators=(",", ":"))), Op.put(w.key, w.value())]


def holds(job: Job) -> set[str]:
    """Fingerprints of the job's schedules whose slots wait (depends_on or not_before)."""
    return {s.fingerprint() for s in job.schedules if waits(s)}


def hold_runs(
    job: Job,
    plan: JobPlan,
    stored_state: dict[str, Any],
    keys: Keys,
    *,
    job_waiting: int,
    project_waiting: int,
    per_job: int = MAX_WAITING_PER_JOB,
    per_project: int = MAX_WAITING_PER_PROJECT,
) -> int:
    """Move the plan's runs of waiting schedules into records (changes ``plan``); answers how
    many slots now wait. ``job_waiting``/``project_waiting``: how many wait already."""
    held = holds(job)
    if not held or not plan.runs:
        return 0
    last: dict[str, datetime] = {}
    for fp, entry in (stored_state.get("schedules") or {}).items():
        if entry.get("last_tick"):
            last[fp] = datetime.fromisoformat(entry["last_tick"])
    kept = []
    added = 0
    for run, tick_key in sorted(plan.runs, key=lambda r: r[0].scheduled_at or r[0].created_at):
        fp, tick = run.schedule or "", run.scheduled_at
        if fp not in held or tick is None:
            kept.append((run, tick_key))
            continue
        previous = last.get(fp)
        if not tick_key.endswith("-deferred"):
            last[fp] = tick  # the previous slot of the next one (previous_slot windows)
        if run.status == "skipped":  # skipped by the overlap policy: a slot without a run
            kept.append((run, tick_key))
            continue
        name = tick_key.rsplit("/", 1)[-1]
        if job_waiting + added >= per_job or project_waiting + added >= per_project:
            which = (
                f"{per_job} slots of this job"
                if job_waiting + added >= per_job
                else f"{per_project} slots of project {job.project!r}"
            )
            reason = f"{which} already wait on their upstreams (the waiting quota)"
            out = SKIPPED_WAITING_QUOTA.name
            plan.records.append((tick_key, settled_record(tick, fp, run.source, None, out, reason)))
            plan.fates.append((out, 1))
            continue
        waiting = Waiting(
            keys.waiting(job.project, job.name, name),
            job.project,
            job.name,
            name,
            tick,
            fp,
            run.source,
            json.loads(run.model_dump_json()),
            tick_key,
            previous,
            job.active_since,
            upstreams=upstreams_of_fp(job.schedules, fp),
        )
        record = settled_record(tick, fp, run.source, None, None, "waiting on upstreams")
        doc = json.loads(record)
        doc["waiting"] = True
        plan.records.append((tick_key, json.dumps(doc, separators=(",", ":"))))
        plan.records.append((waiting.key, waiting.value()))
        added += 1
    plan.runs = kept
    return added
