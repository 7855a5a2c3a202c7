"""The leader's compares, each raced on purpose against a real etcd (issue 25).

Fencing: every write of the leader compares its election key's create revision, so a deposed
leader (its lease gone while it still believes it leads) writes nothing. Each write path is
tried once as the deposed leader, and (a positive control: the test cannot pass vacuously) once
as a leader that still leads. Then the compares that make a tick or a task run happen once: the
tick's idempotency key and the execution record's mod revision.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from cluster.election import Election, Leadership
from cluster.errors import LostOwnership
from cluster.etcd import Etcd
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import JobSpec, Run
from cluster.session import Session
from cluster.store import Store
from cluster.workflow_store import WorkflowStore
from cluster.workflows import WorkflowSpec
from nodes.notifier import Notifier
from nodes.scheduler import Scheduler

P = "p"
EVERY_SECOND = [{"cron": "* * * * * *"}]


@dataclass
class Clock:
    at: datetime

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@dataclass
class Leader:
    session: Session
    lead: Leadership
    sched: Scheduler

    async def depose(self, etcd: Etcd) -> None:
        """The lease goes (as at expiry); this scheduler object does not know."""
        await etcd.revoke(self.session.lease_id)


class Rig:
    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd, self.keys = etcd, keys
        self.clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
        self.store = Store(etcd, keys, Snowflake(7), self.clock)
        self.sessions: list[Session] = []

    async def leader(self, node_id: str = "n1") -> Leader:
        session = await Session.open(self.etcd, 5)
        self.sessions.append(session)
        lead = await Election(self.etcd, self.keys, session, node_id).campaign()
        sched = Scheduler(self.etcd, self.keys, self.store, lead, clock=self.clock, node_id=node_id)
        await sched._load()
        return Leader(session, lead, sched)

    async def runs(self, job: str | None = None) -> list[Run]:
        res = await self.etcd.range(self.keys.runs(P))
        runs = [Run.model_validate_json(kv.value) for kv in res.kvs]
        return [r for r in runs if job is None or r.job == job]

    async def close(self) -> None:
        for s in self.sessions:
            await s.close()


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def deposed_then_leading(
    rig: Rig, act: Callable[[Leader], object], raises: bool = True
) -> tuple[Leader, Leader]:
    """Run ``act`` as a deposed leader (it must raise LostOwnership when ``raises``), then as
    the next leader; the caller checks what each left in etcd."""
    old = await rig.leader("old")
    await old.depose(rig.etcd)
    if raises:
        with pytest.raises((LostOwnership, ExceptionGroup)) as info:
            await act(old)  # type: ignore[misc]
        if isinstance(info.value, ExceptionGroup):
            assert info.value.subgroup(LostOwnership) is not None, info.value
    else:
        await act(old)  # type: ignore[misc]
    new = await rig.leader("new")
    return old, new


# -- fencing ------------------------------------------------------------------------------------


async def test_a_deposed_leader_fires_no_tick_of_jobs_due_together(rig):
    """The batched tick write (several jobs in one transaction) carries the fence."""
    for name in ("a", "b", "c"):
        await rig.store.put_job(P, JobSpec(name=name, command="true", schedules=EVERY_SECOND))
    old = await rig.leader("old")
    rig.clock.advance(1.005)
    await old.depose(rig.etcd)
    with pytest.raises((LostOwnership, ExceptionGroup)):
        await old.sched._fire_batch([(P, "a"), (P, "b"), (P, "c")])
    assert await rig.runs() == []
    new = await rig.leader("new")
    await new.sched._fire_batch([(P, "a"), (P, "b"), (P, "c")])
    assert sorted(r.job for r in await rig.runs()) == ["a", "b", "c"]


async def test_a_deposed_leader_fires_no_single_tick(rig):
    await rig.store.put_job(P, JobSpec(name="a", command="true", schedules=EVERY_SECOND))
    old = await rig.leader("old")
    rig.clock.advance(1.005)
    await old.depose(rig.etcd)
    with pytest.raises(LostOwnership):
        await old.sched.fire((P, "a"))
    assert await rig.runs() == []
    new = await rig.leader("new")
    await new.sched.fire((P, "a"))
    assert len(await rig.runs()) == 1


async def test_a_deposed_leader_records_no_run_as_lost(rig):
    """``check_lost`` (a claim vanished with its worker) is fenced: a deposed leader must not
    declare a run lost (and retry it) that the current leader may see differently."""
    job, _ = await rig.store.put_job(P, JobSpec(name="a", command="true"))
    run = rig.store.new_run(job, source="manual")
    run.status, run.node, run.started_at = "running", "w1", rig.clock()
    await rig.etcd.txn([], rig.store.create_run_ops(run)[:3])  # record, index, active; no claim
    old, new = await deposed_then_leading(
        rig, lambda lead: lead.sched.check_lost(run.id, P), raises=False
    )
    assert (await rig.store.get_run(P, run.id)).status == "running"
    await new.sched.check_lost(run.id, P)
    assert (await rig.store.get_run(P, run.id)).status == "lost"


async def test_a_deposed_leader_prunes_no_run(rig):
    job, _ = await rig.store.put_job(P, JobSpec(name="a", command="true", keep_runs=1))
    for _ in range(3):
        run = rig.store.new_run(job, source="manual", status="succeeded")
        await rig.etcd.txn([], rig.store.create_run_ops(run))
    old, new = await deposed_then_leading(rig, lambda lead: lead.sched.prune(), raises=False)
    assert len(await rig.runs()) == 3
    await new.sched.prune()
    assert len(await rig.runs()) == 1


async def test_a_deposed_leader_advances_no_workflow_execution(rig):
    wfs = WorkflowStore(rig.store)
    spec = WorkflowSpec(
        name="w",
        tasks=[{"name": "t1", "command": "true"}, {"name": "t2", "command": "true"}],
        edges=[["t1", "t2"]],
    )
    await wfs.put_workflow(P, spec)
    ex = await wfs.trigger(P, "w", {})
    ek = (P, ex.id)
    before = await rig.etcd.get(rig.keys.execution(*ek))

    async def advance(lead: Leader) -> None:
        await lead.sched.workflows._load()
        await lead.sched.workflows.process(ek)

    old, new = await deposed_then_leading(rig, advance)
    after = await rig.etcd.get(rig.keys.execution(*ek))
    assert after is not None and before is not None
    assert after.mod_revision == before.mod_revision and await rig.runs() == []
    await advance(new)
    assert len(await rig.runs()) == 1  # t1 started; t2 waits for it


async def test_a_deposed_leader_fires_no_workflow_tick(rig):
    wfs = WorkflowStore(rig.store)
    spec = WorkflowSpec(name="w", tasks=[{"name": "t1", "command": "true"}], schedules=EVERY_SECOND)
    await wfs.put_workflow(P, spec)
    rig.clock.advance(1.005)

    async def fire(lead: Leader) -> None:
        await lead.sched.workflows._load()
        await lead.sched.workflows.fire((P, "w"))

    old, new = await deposed_then_leading(rig, fire)
    assert (await rig.etcd.range(rig.keys.executions(P), count_only=True)).count == 0
    await fire(new)
    assert (await rig.etcd.range(rig.keys.executions(P), count_only=True)).count == 1


async def test_a_deposed_leader_saves_no_notifier_cursor(rig):
    def notifier(lead: Leader) -> Notifier:
        node = SimpleNamespace(
            store=rig.store, etcd=rig.etcd, keys=rig.keys, config=SimpleNamespace(smtp_url=None)
        )
        return Notifier(node, lead.lead)  # type: ignore[arg-type]

    async def save(lead: Leader) -> None:
        await notifier(lead)._write_cursor(42)

    old, new = await deposed_then_leading(rig, save)
    assert await rig.etcd.get(rig.keys.notifier_cursor()) is None
    await save(new)
    cursor = await rig.etcd.get(rig.keys.notifier_cursor())
    assert cursor is not None and json.loads(cursor.value) == {"revision": 42}


# -- one run per tick, one run per task ---------------------------------------------------------


async def test_a_tick_a_backfill_already_ran_gets_no_second_run(rig):
    """The idempotency key per tick: the schedule state says the tick is still to fire (the CAS
    passes), but a backfill created the tick's run meanwhile; the tick key's compare stops the
    leader from creating a second run for it."""
    await rig.store.put_job(P, JobSpec(name="a", command="true", schedules=EVERY_SECOND))
    lead = await rig.leader()
    rig.clock.advance(1.005)
    tick = rig.clock().replace(microsecond=0)
    done = await rig.store.backfill(P, "a", tick, tick)
    assert len(done["created"]) == 1
    await lead.sched.fire((P, "a"))
    runs = await rig.runs("a")
    assert [r.scheduled_at for r in runs] == [tick], runs
    assert [r.source for r in runs] == ["backfill"]


async def test_two_leaders_with_stale_views_start_each_task_once(rig):
    """Advancing compares the execution record's mod revision: two engines that loaded the
    same execution (a leader and its stale predecessor) cannot both start its first task."""
    wfs = WorkflowStore(rig.store)
    spec = WorkflowSpec(name="w", tasks=[{"name": "t1", "command": "true"}])
    await wfs.put_workflow(P, spec)
    ex = await wfs.trigger(P, "w", {})
    lead = await rig.leader()
    a = lead.sched
    b = Scheduler(rig.etcd, rig.keys, rig.store, lead.lead, clock=rig.clock, node_id="n1")
    await a.workflows._load()
    await b.workflows._load()
    await a.workflows.process((P, ex.id))
    await b.workflows.process((P, ex.id))  # its view predates a's write
    runs = await rig.runs()
    assert len(runs) == 1, [r.id for r in runs]
    stored = (await wfs.get_kv(P, ex.id)).execution
    assert stored.tasks["t1"].run_id == runs[0].id
