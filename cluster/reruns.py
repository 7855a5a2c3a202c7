"""Rerunning a slot's run (D295): a new run of the same slot, recorded in the slot's tick record,
so the slot stands for its newest run. A waiting downstream that counts the slot sees the rerun's
status (``cluster.depends.slot_run``): a rerun that succeeds turns a failed upstream slot into a
succeeded one and releases what waited on it."""

from __future__ import annotations

import json

from cluster.errors import Conflict
from cluster.etcd import Compare, Op
from cluster.models import Run
from cluster.slotlog import dumps
from cluster.store import Store


async def rerun_slot(store: Store, project: str, run_id: str) -> Run:
    """A new run of a finished slot run's job, at the same slot (``scheduled_at``, schedule,
    parameters; ``source: rerun``), created with the tick record's update in one transaction
    comparing the record: two reruns at once make one run. 409 for a run that has not finished
    or was not a slot's (a manual run has no slot to stand for)."""
    old = await store.get_run(project, run_id)
    if not old.finished:
        raise Conflict(f"run {run_id} has not finished ({old.status})", field="run")
    if old.scheduled_at is None or not old.schedule:
        raise Conflict(f"run {run_id} is not a scheduled slot's run", field="run")
    ms = int(old.scheduled_at.timestamp() * 1000)
    candidates = [
        store.keys.tick(project, old.job, old.schedule, ms),
        store.keys.tick(project, old.job, f"{old.schedule}-deferred", ms),
    ]
    for _ in range(5):
        kvs = await store.get_many(candidates)
        mine = [
            kv
            for kv in kvs
            if old.id in (json.loads(kv.value).get("run"), json.loads(kv.value).get("rerun"))
        ]
        if not mine:
            raise Conflict(f"run {run_id}'s slot is no longer in the tick log", field="run")
        kv = mine[0]
        record = json.loads(kv.value)
        # Only the run the slot stands for may be rerun: a second rerun of the same run (two
        # clicks, at once or one after the other: the second may read after the first landed)
        # makes no second run; the newest one is what to rerun next (D443).
        if record.get("rerun") not in (None, old.id):
            raise Conflict(
                f"run {run_id}'s slot was rerun meanwhile (run {record['rerun']}): rerun that "
                "run to run the slot again",
                field="run",
            )
        job = await store.get_job(project, old.job)
        run = store.new_run(
            job,
            source="rerun",
            parameters=old.parameters,
            scheduled_at=old.scheduled_at,
            schedule=old.schedule,
        )
        await store.check_history(project, store.charge_of(run))  # 403 over the quota (D318)
        record["rerun"] = run.id
        record["reruns"] = int(record.get("reruns") or 0) + 1
        res = await store.etcd.txn(
            [
                Compare.modified(kv.key, kv.mod_revision),
                Compare.absent(store.keys.run(project, run.id)),
            ],
            [Op.put(kv.key, dumps(record)), *store.create_run_ops(run)],
        )
        if res.succeeded:
            return run
    raise Conflict(f"run {run_id}'s slot keeps changing; retry", field="run")
