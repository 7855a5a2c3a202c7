"""Ticks a leader passes without a run (planned more than the on-time grace late: downtime, a
lease lost, a leader too busy) are counted in the metrics and the ticks view, and now also said
once per scheduling pass in the node's log (D385): a bench window or an operator reading the log
sees that ticks went missing, how many, and for which jobs, without querying each job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from cluster.election import Election
from cluster.ids import Snowflake
from cluster.models import JobSpec
from cluster.session import Session
from cluster.store import Store
from nodes.leader.missed import report_missed
from nodes.leader.scheduler import Scheduler


async def test_a_pass_that_misses_ticks_says_so_once(etcd, keys):
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store(etcd, keys, Snowflake(4), lambda: clock[0])
    every_second = [{"cron": "* * * * * *"}]
    for name in ("a", "b"):
        await store.put_job("p", JobSpec(name=name, command="true", schedules=every_second))
    session = await Session.open(etcd, 5)
    try:
        leadership = await Election(etcd, keys, session, "n1").campaign()
        sched = Scheduler(etcd, keys, store, leadership, clock=lambda: clock[0], node_id="n1")
        await sched._load()
        with capture_logs() as logs:
            report_missed(sched._missed)  # nothing missed yet: nothing said
            assert logs == []
            # 10 s without planning: ticks 9 and 10 are on time (D374), 1-8 are missed
            clock[0] += timedelta(seconds=10, milliseconds=5)
            await sched._fire_batch([("p", "a"), ("p", "b")])
            report_missed(sched._missed)
            report_missed(sched._missed)  # said once per pass
        missed = [e for e in logs if e["event"] == "ticks missed"]
        assert len(missed) == 1, logs
        assert missed[0]["log_level"] == "warning"
        assert (missed[0]["jobs"], missed[0]["ticks"]) == (2, 16)
        assert sorted(missed[0]["most"]) == ["p/a x8", "p/b x8"]
        runs = await etcd.range(keys.runs("p"))
        assert len(runs.kvs) == 4  # each job's two on-time ticks
    finally:
        await session.close()
