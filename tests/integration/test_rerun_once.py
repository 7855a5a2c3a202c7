"""Two reruns of the same slot run make one new run (review of D295, D443). ``rerun_slot``
compares the slot's tick record, but the loser re-read the record, still found the old run in
it (as ``run``) and made a second rerun: two clicks, two new runs of one slot. And when the second
click's first read came after the first had landed (CI, stop 33), it made a second run too: only
the run the slot stands for may be rerun."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from cluster.errors import Conflict
from cluster.ids import Snowflake
from cluster.models import JobSpec, parse_model
from cluster.reruns import rerun_slot
from cluster.store import Store

NOW = datetime(2026, 12, 6, 15, tzinfo=UTC)
SLOT = datetime(2026, 12, 6, 6, tzinfo=UTC)


async def test_two_reruns_at_once_make_one_run(etcd, keys):
    store = Store(etcd, keys, Snowflake(5), lambda: NOW)
    job, _ = await store.put_job(
        "p",
        parse_model(
            JobSpec, {"name": "up", "command": "true", "schedules": [{"cron": "0 6 * * *"}]}
        ),
    )
    fp = job.schedules[0].fingerprint()
    for _ in range(5):
        run = store.new_run(job, source="schedule", scheduled_at=SLOT, schedule=fp)
        run.status, run.finished_at = "failed", NOW
        tick = keys.tick("p", "up", fp, int(SLOT.timestamp() * 1000))
        record = {"tick": SLOT.isoformat(), "schedule": fp, "run": run.id, "outcome": "fired"}
        await etcd.txn([], store.create_run_ops(run))
        await etcd.put(tick, json.dumps(record))
        results = await asyncio.gather(
            rerun_slot(store, "p", run.id), rerun_slot(store, "p", run.id), return_exceptions=True
        )
        made = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, Conflict)]
        assert len(made) == 1 and len(refused) == 1, results
        assert "rerun meanwhile" in refused[0].message
        reruns = [
            kv for kv in (await etcd.range(keys.runs("p"))).kvs if b'"source":"rerun"' in kv.value
        ]
        assert len(reruns) == 1
        await etcd.delete(keys.runs("p"), prefix=True)


async def test_a_superseded_run_is_not_rerun_again_the_newest_is(etcd, keys):
    """One click after the other: the second rerun of the same run is refused, naming the run
    the slot stands for now; that run, once finished, can be rerun."""
    store = Store(etcd, keys, Snowflake(6), lambda: NOW)
    job, _ = await store.put_job(
        "p",
        parse_model(
            JobSpec, {"name": "up", "command": "true", "schedules": [{"cron": "0 6 * * *"}]}
        ),
    )
    fp = job.schedules[0].fingerprint()
    run = store.new_run(job, source="schedule", scheduled_at=SLOT, schedule=fp)
    run.status, run.finished_at = "failed", NOW
    tick = keys.tick("p", "up", fp, int(SLOT.timestamp() * 1000))
    await etcd.txn([], store.create_run_ops(run))
    await etcd.put(tick, json.dumps({"tick": SLOT.isoformat(), "run": run.id, "outcome": "fired"}))

    first = await rerun_slot(store, "p", run.id)
    with pytest.raises(Conflict) as again:
        await rerun_slot(store, "p", run.id)
    assert again.value.field == "run" and first.id in again.value.message
    with pytest.raises(Conflict, match="has not finished"):
        await rerun_slot(store, "p", first.id)  # pending: nothing to rerun yet

    first.status, first.finished_at = "failed", NOW  # the rerun failed too: rerun it
    await etcd.put(keys.run("p", first.id), first.model_dump_json())
    second = await rerun_slot(store, "p", first.id)
    record = json.loads((await etcd.get(tick)).value)
    assert record["rerun"] == second.id and record["reruns"] == 2 and record["run"] == run.id
