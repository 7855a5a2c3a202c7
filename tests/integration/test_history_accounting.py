"""The run-history quota counts what records take (D318), on a real etcd.

Every record has a charge key written in the transaction that creates, finishes or deletes it;
the leader's count sums them. The sum is checked against the records themselves after creating,
finishing, cancelling and pruning, and a deposed leader's count writes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from cluster.election import Election, Leadership
from cluster.errors import QuotaExceeded
from cluster.etcd import Etcd
from cluster.history import parse_bytes, run_charge
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import JobSpec, Run
from cluster.quotas import Quotas
from cluster.session import Session
from cluster.store import Store
from nodes.leader.history import HistoryAccountant
from nodes.leader.retention import RunRetention

P = "p"


class Rig:
    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd, self.keys = etcd, keys
        self.store = Store(etcd, keys, Snowflake(9), lambda: datetime.now(UTC))
        self.sessions: list[Session] = []

    async def lead(self, node: str) -> tuple[Session, Leadership]:
        session = await Session.open(self.etcd, 5)
        self.sessions.append(session)
        return session, await Election(self.etcd, self.keys, session, node).campaign()

    async def charges(self) -> dict[str, int]:
        res = await self.etcd.range_all(self.keys.history_charges(P))
        return {kv.key.rsplit("/", 1)[-1]: parse_bytes(kv.value) for kv in res.kvs}

    async def records(self) -> dict[str, bytes]:
        res = await self.etcd.range_all(self.keys.runs(P))
        return {kv.key.rsplit("/", 1)[-1]: kv.value for kv in res.kvs}

    async def used(self) -> int:
        return await self.store.history_used(P)

    async def finish(self, run_id: str, result: object) -> None:
        run = await self.store.get_run(P, run_id)
        _, ops = self.store.finish_ops(run, status="succeeded", exit_code=0, result=result)
        res = await self.etcd.txn([], ops)
        assert res.succeeded


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    for s in r.sessions:
        await s.close()


async def test_charges_follow_the_records_through_create_finish_cancel_and_prune(rig: Rig) -> None:
    job, _ = await rig.store.put_job(P, JobSpec(name="j", command="true", keep_runs=2))
    runs = [await rig.store.trigger(P, "j", {}) for _ in range(5)]
    charges, records = await rig.charges(), await rig.records()
    assert set(charges) == {r.id for r in runs}
    for run in runs:  # pending: the record, its queue copy and what it may still gain
        stored = Run.model_validate_json(records[run.id])
        assert charges[run.id] == run_charge(stored, len(records[run.id]))
        assert charges[run.id] > 2 * len(records[run.id])

    for run in runs[:3]:
        await rig.finish(run.id, {"rows": 12})
    for run in runs[3:]:
        await rig.store.cancel_run(P, run.id)
    charges, records = await rig.charges(), await rig.records()
    # every run finished: each is charged exactly the bytes its record takes
    assert charges == {i: len(v) for i, v in records.items()}

    _, lead = await rig.lead("n1")
    counter = HistoryAccountant(rig.etcd, rig.store, lead)
    totals = await counter.count()
    assert totals[P] == sum(len(v) for v in records.values()) == await rig.used()

    retention = RunRetention(
        rig.etcd, rig.keys, lead, clock=rig.store.clock, job_of=lambda jk: job, active={}
    )
    await retention.prune()
    charges, records = await rig.charges(), await rig.records()
    assert len(records) == 2  # keep_runs
    assert charges == {i: len(v) for i, v in records.items()}  # pruned records took theirs
    await counter.count()
    assert await rig.used() == sum(len(v) for v in records.values())


async def test_a_deposed_leader_counts_nothing_and_the_next_one_is_exact(rig: Rig) -> None:
    await rig.store.put_job(P, JobSpec(name="j", command="true"))
    await rig.store.trigger(P, "j", {})
    session, old = await rig.lead("old")
    first = HistoryAccountant(rig.etcd, rig.store, old)
    await first.count()
    before = await rig.used()
    assert before > 0
    await rig.etcd.revoke(session.lease_id)  # deposed; the object does not know
    for _ in range(3):
        await rig.store.trigger(P, "j", {})
    await first.count()
    assert await rig.used() == before  # its fenced write did not apply

    _, new = await rig.lead("new")
    await HistoryAccountant(rig.etcd, rig.store, new).count()
    assert await rig.used() == sum((await rig.charges()).values())


async def test_creations_are_refused_and_ticks_skipped_at_the_quota(rig: Rig) -> None:
    job, _ = await rig.store.put_job(P, JobSpec(name="j", command="true"))
    run = await rig.store.trigger(P, "j", {})
    one = (await rig.charges())[run.id]
    rig.store.quotas = Quotas(run_history_bytes=one + one // 2)
    _, lead = await rig.lead("n1")
    counter = HistoryAccountant(rig.etcd, rig.store, lead)
    await counter.count()
    assert P not in rig.store.history_over  # one run charged, below the quota
    with pytest.raises(QuotaExceeded) as info:
        await rig.store.trigger(P, "j", {})  # a second would pass it
    assert info.value.field == "quotas.run_history_bytes"
    assert len(await rig.records()) == 1  # nothing written
    tick = rig.store.new_run(job, source="schedule")
    assert tick.status == "pending"

    rig.store.quotas = Quotas(run_history_bytes=one)
    await counter.count()
    assert P in rig.store.history_over
    tick = rig.store.new_run(job, source="schedule")
    assert tick.status == "skipped" and "run_history_bytes" in (tick.error or "")
    assert tick.finished_at is not None
    manual = rig.store.new_run(job, source="manual")  # the API's own check refuses those
    assert manual.status == "pending"


async def test_the_leader_follows_the_charges_and_publishes_their_sums(rig: Rig) -> None:
    """Running: one read, then a watch; every change of a charge moves the total it keeps, and
    the totals are written every ``every`` seconds (here 0.05)."""
    import asyncio

    from tests.conftest import wait_for

    job, _ = await rig.store.put_job(P, JobSpec(name="j", command="true", keep_runs=1))
    first = await rig.store.trigger(P, "j", {})
    _, lead = await rig.lead("n1")
    counter = HistoryAccountant(rig.etcd, rig.store, lead, every=0.05)
    task = asyncio.create_task(counter.run())
    try:

        async def exact() -> bool:
            charges = sum((await rig.charges()).values())
            return charges > 0 and await rig.used() == charges

        await wait_for(exact, 10, what="the first read published")
        for _ in range(3):
            await rig.store.trigger(P, "j", {})
        await wait_for(exact, 10, what="new runs counted through the watch")
        await rig.finish(first.id, {"n": 1})
        await wait_for(exact, 10, what="a finished run counted at its size")
        retention = RunRetention(
            rig.etcd, rig.keys, lead, clock=rig.store.clock, job_of=lambda jk: job, active={}
        )
        await retention.prune()  # the finished one goes (keep_runs 1 counts finished ones)
        await wait_for(exact, 10, what="a pruned run's charge released")
        assert counter.totals[P] == sum((await rig.charges()).values())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert rig.store.history_over == frozenset()


async def test_records_written_before_charges_existed_are_charged(rig: Rig) -> None:
    """An upgrade: run and execution records with no charge key are found and charged, once."""
    from cluster.workflow_store import WorkflowStore
    from cluster.workflows import WorkflowSpec

    await rig.store.put_job(P, JobSpec(name="j", command="true"))
    old = await rig.store.trigger(P, "j", {})
    flows = WorkflowStore(rig.store)
    await flows.put_workflow(P, WorkflowSpec(name="w", tasks=[{"name": "a", "command": "true"}]))
    ex = await flows.trigger(P, "w", {})
    for record in (old.id, ex.id):  # as a version before D318 left them
        await rig.etcd.delete(rig.keys.history_charge(P, record))
    _, lead = await rig.lead("n1")
    counter = HistoryAccountant(rig.etcd, rig.store, lead)
    await counter.count()
    assert await rig.used() == 0
    assert await counter.adopt() == 2
    charges = await rig.charges()
    record = await rig.etcd.get(rig.keys.run(P, old.id))
    assert record is not None
    assert charges[old.id] == run_charge(Run.model_validate_json(record.value), len(record.value))
    assert ex.id in charges
    await counter.count()
    assert await rig.used() == sum(charges.values())
    assert await counter.adopt() == 0  # nothing left to charge


async def test_hundreds_of_small_jobs_keeping_100_runs_fit_the_default(rig: Rig) -> None:
    """Measured on real records: 3 jobs of ~2 KiB, 100 finished runs each (with a small
    result), as the leader counts them; 500 such jobs stay well within the default 1 GiB (D210's
    bound let ~62 in)."""
    from cluster.quotas import DEFAULT_RUN_HISTORY_BYTES
    from tests.unit.test_run_history_bound import small_job

    for name in ("a", "b", "c"):
        spec = small_job(name).spec()
        await rig.store.put_job(P, JobSpec(**spec.model_dump(exclude_unset=True)))
        for _ in range(100):
            run = await rig.store.trigger(P, name, {})
            await rig.finish(run.id, {"rows": 1234, "file": "s3://bucket/2026-12-06.csv"})
    _, lead = await rig.lead("n1")
    totals = await HistoryAccountant(rig.etcd, rig.store, lead).count()
    records = await rig.records()
    assert len(records) == 300 and totals[P] == sum(len(v) for v in records.values())
    per_job = totals[P] / 3
    assert 500 * per_job < DEFAULT_RUN_HISTORY_BYTES / 2, per_job
