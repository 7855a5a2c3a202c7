"""Two reruns of the same slot run at once make one new run (review of D295). ``rerun_slot``
compares the slot's tick record, but the loser re-read the record, still found the old run in
it (as ``run``) and made a second rerun: two clicks, two new runs of one slot."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

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
