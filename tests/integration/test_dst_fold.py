"""The fall-back hour on real etcd (D220): two schedulers racing through New York's repeated
hour fire a daily 01:30 job with ``fold: both`` exactly twice (two slots, two tick keys) and with
``fold: first`` (and the default) exactly once, whatever the interleaving."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from cluster.election import Election
from cluster.ids import Snowflake
from cluster.models import JobSpec, Run
from cluster.session import Session
from cluster.store import Store
from nodes.leader.scheduler import Scheduler

JOBS = {"fold-both": {"fold": "both"}, "fold-first": {"fold": "first"}, "fold-auto": None}


async def test_fold_both_fires_twice_and_first_once(etcd, keys):
    clock = [datetime(2026, 11, 1, 4, 50, tzinfo=UTC)]  # 00:50 EDT
    store = Store(etcd, keys, Snowflake(9), lambda: clock[0])
    for name, dst in JOBS.items():
        schedule = {"cron": "30 1 * * *", "timezone": "America/New_York", "dst": dst}
        await store.put_job("p", JobSpec(name=name, command="true", schedules=[schedule]))
    session = await Session.open(etcd, 10)
    lead = await Election(etcd, keys, session, "n1").campaign()
    a = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1")
    b = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1")
    await a._load()
    await b._load()
    due = [("p", name) for name in JOBS]
    # 00:50 EDT .. 02:10 EST (04:50Z .. 07:10Z) in 5-minute steps, both schedulers each step,
    # the second pass twice (a leader that looks again at the same instant).
    while clock[0] < datetime(2026, 11, 1, 7, 10, tzinfo=UTC):
        clock[0] += timedelta(minutes=5, milliseconds=3)
        await asyncio.gather(a._fire_batch(due), b._fire_batch(list(reversed(due))))
        await a._fire_batch(due)
    res = await etcd.range(keys.runs("p"))
    runs = [Run.model_validate_json(kv.value) for kv in res.kvs]
    fired: dict[str, list[str]] = {name: [] for name in JOBS}
    for run in runs:
        assert run.scheduled_at is not None
        fired[run.job].append(run.scheduled_at.astimezone(UTC).strftime("%H:%M"))
    assert {k: sorted(v) for k, v in fired.items()} == {
        "fold-both": ["05:30", "06:30"],  # 01:30 EDT and 01:30 EST
        "fold-first": ["05:30"],
        "fold-auto": ["05:30"],  # a fixed hour: today's rule, first only
    }
    assert (await etcd.range(keys.queue(), count_only=True)).count == 4
    await session.close()
