"""The leader's slot watcher: settles every slot that has deadlines with exactly one outcome (D230).

A slot with deadlines is written "open" by the scheduler, in the transaction that handles its
tick: its tick record has ``outcome: null`` and an ``open-slots/<project>/<job>/<tick name>`` key
holds what the deadlines need (instant, deadlines, run id). This watcher keeps the open slots in
one :class:`DueQueue` keyed by the open-slot key, due at the slot's next deadline; the run's claim
(start) and end (its active key removed) make it due at once. Nothing polls: a slot is looked at
when a deadline falls due or its run moves.

Settling a slot is one transaction, fenced on leadership, comparing the open-slot key's mod
revision: it rewrites the tick record with the outcome and reason, deletes the open-slot key,
keeps the job's alarm key (``slot-alarms/…``: its last watched slot missed a deadline) and puts
the slot's notifications into ``slot-outbox/``. So a slot ends once, whoever leads: a new leader
reads the open-slot keys (and the outbox) at the revision it starts from, and decides each slot
again from the slot's instant and its run's record as they are in etcd.

Freshness (``expected_every``, jobs without schedules) uses the same keys: an open slot named
``<due ms>-expected`` is due ``expected_every`` after the job's last success; a success moves it,
its deadline settles it ``deadline_missed`` (one per stale period: the next opens with the next
success, which is also the ``recovered`` event).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from cluster import outcomes
from cluster.etcd import Compare, Etcd, Op
from cluster.keys import Keys
from cluster.models import Job, Run
from cluster.slotlog import OpenSlot, event_ops, open_slot_value, settled_record, slot_name
from cluster.store import Store
from cluster.watch import follow
from cluster.workflows import Execution
from nodes import metrics
from nodes.leader.depwait import DependencyWaiter
from nodes.leader.loops import DueQueue, retry_later
from nodes.leader.slotdoc import slot_doc
from nodes.leader.slotoutbox import SlotOutbox

if TYPE_CHECKING:
    from cluster.election import Leadership

log = structlog.get_logger(__name__)

JobKey = tuple[str, str]
PARALLEL = 16  # slots settled at once (each is a run read and a transaction)


def count_fates(jk: JobKey, fates: list[tuple[str, int]]) -> None:
    """Ticks not fired (spans: ``missed``, ``disabled``), as ticks and as slot outcomes."""
    for fate, count in fates:
        metrics.TICKS.labels(fate).inc(count)
        metrics.SLOT_OUTCOMES.labels(*jk, outcomes.outcome_of_fate(fate)).inc(count)


def count_settled(jk: JobKey, run: Run, wall: float, watched: Container[str]) -> None:
    """Metrics of a slot settled when its tick was handled (its schedule, not in ``watched``,
    has no deadlines)."""
    if (run.schedule or "") in watched:
        return
    fate = "skipped" if run.status == "skipped" else run.source
    metrics.child(metrics.SLOT_OUTCOMES, *jk, outcomes.outcome_of_fate(fate)).inc()
    if run.source == "catch-up" and run.scheduled_at is not None:
        metrics.SLOT_LATENESS.observe(max(0.0, wall - run.scheduled_at.timestamp()))


class SlotWatcher:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        store: Store,
        leadership: Leadership,
        *,
        clock: Callable[[], datetime],
        job_of: Callable[[JobKey], Job | None],
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.store = store
        self.lead = leadership
        self.clock = clock
        self.job_of = job_of
        self.open: dict[str, OpenSlot] = {}
        self.by_run: dict[str, str] = {}
        self.fresh_of: dict[JobKey, str] = {}  # a job's open freshness slot
        self.alarms: set[JobKey] = set()
        self.due: DueQueue[str] = DueQueue(clock)
        self._dirty: set[str] = set()  # moved since its look began: looked at again, not re-armed
        self.outbox = SlotOutbox(etcd, keys, leadership)  # slot notifications (D232)
        self._sem = asyncio.Semaphore(PARALLEL)
        self.settled = 0
        self.deps = DependencyWaiter(
            etcd, keys, store, leadership, clock=clock, job_of=job_of, outbox=self.outbox.wake
        )

    # -- the picture ---------------------------------------------------------------------------

    async def load(self, rev: int) -> None:
        """The open slots and alarms at ``rev``; every open slot is decided again at once."""
        slots = await self.etcd.range_all(self.keys.open_slots(), revision=rev)
        alarms = await self.etcd.range_all(self.keys.slot_alarms(), revision=rev, keys_only=True)
        for kv in slots.kvs:
            self._on_open(kv.key, kv.value, kv.mod_revision)
        for kv in alarms.kvs:
            project, job = self.keys.tail(kv.key, self.keys.slot_alarms())[:2]
            self.alarms.add((project, job))
        self.outbox.wake()

    def _on_open(self, key: str, value: bytes | None, rev: int) -> None:
        if value is None:
            old = self.open.pop(key, None)
            if old is not None:
                self.due.set(key, None, wake=False)
                if old.run is not None:
                    self.by_run.pop(old.run, None)
                if self.fresh_of.get(old.jk) == key:
                    del self.fresh_of[old.jk]
            return
        project, job, name = self.keys.tail(key, self.keys.open_slots())[:3]
        try:
            slot = OpenSlot.parse(key, (project, job), name, value, rev)
        except (ValueError, KeyError, TypeError) as exc:  # by hand, or a newer version
            log.error("cannot read open slot; ignoring it", slot=key, error=str(exc))
            return
        self.open[key] = slot
        if slot.run is not None:
            self.by_run[slot.run] = key
        if slot.fresh:
            self.fresh_of[slot.jk] = key
        self._kick(key)

    def _kick(self, key: str) -> None:
        """``key`` is due now, and a look at it that is under way must not re-arm it later."""
        self._dirty.add(key)
        self.due.set(key, self.clock())

    def _rearm(self, key: str, when: datetime | None) -> None:
        """After a look that settled nothing: due at ``when``, or at once when an event came in
        meanwhile (the look may have read the run before it moved)."""
        self.due.set(key, self.clock() if key in self._dirty else when, wake=False)

    def on_run_moved(self, run_id: str, jk: JobKey | None = None) -> None:
        """A run was claimed (started) or ended: its slot, and its job's freshness, look again."""
        key = self.by_run.get(run_id)
        if key is not None:
            self._kick(key)
        if jk is not None:
            job = self.job_of(jk)
            if job is not None and job.expected_every:
                self._kick(self.fresh_of.get(jk) or f"fresh:{jk[0]}/{jk[1]}")

    def claims(self, then: Callable[[Any], None]) -> Callable[[Any], None]:
        """A claim-event callback: ``then`` (the reaper's), and a claimed run's open slot looks
        again (its run started)."""

        def on_claim(ev: Any) -> None:
            then(ev)
            if ev.kind == "put":
                self.on_run_moved(ev.kv.key.rsplit("/", 1)[-1])

        return on_claim

    def on_job(self, jk: JobKey) -> None:
        """A job appeared or changed: one with ``expected_every`` gets a freshness period when it
        has none (D235)."""
        job = self.job_of(jk)
        if job is not None and job.expected_every and job.enabled:
            self._kick(f"fresh:{jk[0]}/{jk[1]}")
        self.deps.on_job(jk)  # its waiting slots, with their upstreams as the job has them now

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, rev: int, jobs: list[JobKey]) -> None:
        await self.load(rev)
        for jk in jobs:
            self.on_job(jk)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                follow(
                    self.etcd,
                    self.keys.open_slots(),
                    rev,
                    lambda ev: self._on_open(
                        ev.kv.key, ev.kv.value if ev.kind == "put" else None, ev.kv.mod_revision
                    ),
                    lambda: set(self.open),
                )
            )
            tg.create_task(self.outbox.run())
            tg.create_task(self.deps.run(rev))  # slots waiting on upstreams (D294)
            while True:
                due = self.due.pop_due()
                if due:
                    await asyncio.gather(*(self._guarded(key) for key in due))
                    continue
                await self.due.wait()

    async def _guarded(self, key: str) -> None:
        async with self._sem:
            self._dirty.discard(key)
            if key.startswith("fresh:"):
                project, _, job = key[len("fresh:") :].partition("/")
                await retry_later(
                    self.due, key, lambda: self._freshness((project, job)), "slot not settled"
                )
            else:
                await retry_later(self.due, key, lambda: self._settle(key), "slot not settled")

    async def _run_view(self, slot: OpenSlot) -> outcomes.RunView | None:
        project, run_id = slot.jk[0], slot.run
        if slot.execution is not None:  # a workflow slot: its execution stands for the run
            got = await self.etcd.get(self.keys.execution(project, slot.execution))
            if got is None:
                return None
            ex = Execution.model_validate_json(got.value)
            status = "pending" if ex.status == "queued" else ex.status
            return outcomes.RunView(ex.id, status, ex.started_at, ex.finished_at)
        if run_id is None:
            return None
        kv = await self.etcd.get(self.keys.run(project, run_id))
        if kv is None:
            return None
        run = Run.model_validate_json(kv.value)
        first = run.attempts[0].started_at if run.attempts else run.started_at
        return outcomes.RunView(run.id, run.status, first, run.finished_at, run.error)

    async def _settle(self, key: str) -> None:
        slot = self.open.get(key)
        if slot is None:
            return
        if not await self._exists(slot.jk):  # the job is gone: its slots end with it
            await self._txn(slot, [Op.delete(key)])
            return
        if slot.fresh:
            await self._freshness(slot.jk)
            return
        view = await self._run_view(slot)
        verdict = outcomes.decide(slot.slot, view, self.clock())
        if verdict.outcome is None:
            self._rearm(key, verdict.next_check)
            return
        await self._close(slot, verdict, view)

    async def _exists(self, jk: JobKey) -> bool:
        if jk[1].startswith("@"):  # a workflow's slots (D234)
            return await self.etcd.get(self.keys.workflow(jk[0], jk[1][1:])) is not None
        # not in the cache: gone, or not yet delivered by its watch (a shard leader's tick can
        # open the slot before shard 0's job watch brings the job, D367): etcd says which
        return self.job_of(jk) is not None or await self.etcd.get(self.keys.job(*jk)) is not None

    def _tick_key(self, slot: OpenSlot) -> str:
        """The slot's tick key: the open slot's name under the job's (or workflow's) ticks."""
        project, job = slot.jk
        if slot.execution is not None:
            return self.keys.workflow_ticks(project, job[1:]) + slot.name
        return self.keys.ticks(project, job) + slot.name

    async def _close(
        self,
        slot: OpenSlot,
        verdict: outcomes.Verdict,
        view: outcomes.RunView | None,
        extra_ops: list[Any] | None = None,
        *,
        reused: bool = False,
    ) -> bool:
        """Settle ``slot``; ``reused``: ``extra_ops`` write its key again (not deleted)."""
        assert verdict.outcome is not None
        project, job = slot.jk
        tick = slot.slot.due
        info = outcomes.OUTCOMES[verdict.outcome]
        ops: list[Any] = [
            *([] if reused else [Op.delete(slot.key)]),
            Op.put(
                self._tick_key(slot),
                settled_record(
                    tick,
                    slot.schedule,
                    slot.fate,
                    slot.run,
                    verdict.outcome,
                    verdict.reason,
                    lateness=verdict.lateness,
                    settled_at=self.clock().isoformat(),
                    **({"execution": slot.execution} if slot.execution else {}),
                ),
            ),
            *(extra_ops or []),
        ]
        events: list[str] = []
        if info.bad:
            ops.append(Op.put(self.keys.slot_alarm(project, job), verdict.outcome))
            events.append(verdict.outcome)
        else:
            if verdict.outcome == outcomes.LATE.name:
                events.append("late")
            if (project, job) in self.alarms and info.ran:
                ops.append(Op.delete(self.keys.slot_alarm(project, job)))
                events.append("recovered")
        for event in events:
            ops += event_ops(self.keys, slot, event, verdict.outcome, verdict.reason)
        if not await self._txn(slot, ops):
            return False
        self.settled += 1
        if info.bad:
            self.alarms.add(slot.jk)
        elif "recovered" in events:
            self.alarms.discard(slot.jk)
        metrics.SLOT_OUTCOMES.labels(project, job, verdict.outcome).inc()
        if verdict.lateness is not None:
            metrics.SLOT_LATENESS.observe(max(0.0, verdict.lateness))
        log.info(
            "slot settled",
            job=f"{project}/{job}",
            tick=tick.isoformat(),
            outcome=verdict.outcome,
            reason=verdict.reason,
            run=slot.run,
        )
        if events:
            self.outbox.wake()
        return True

    async def _txn(self, slot: OpenSlot, ops: list[Any]) -> bool:
        """One fenced write comparing the open slot as we know it; False when it moved (the
        watch brings the new version, or its deletion: another write settled it)."""
        res = await self.etcd.txn(
            [self.lead.fence(), Compare.modified(slot.key, slot.rev)], ops, [self.lead.probe()]
        )
        if not res.succeeded:
            self.lead.check_fenced(res, "fenced slot write rejected")
            return False
        self.open.pop(slot.key, None)
        if slot.run is not None:
            self.by_run.pop(slot.run, None)
        if self.fresh_of.get(slot.jk) == slot.key:
            del self.fresh_of[slot.jk]
        return True

    # -- freshness (expected_every) ------------------------------------------------------------

    async def _last_success(self, jk: JobKey) -> datetime | None:
        """The newest success among the job's newest runs (a page of its run index)."""
        res = await self.etcd.range(self.keys.job_runs(*jk), limit=50, descending=True)
        for kv in res.kvs:
            if kv.value == b"succeeded":
                run_id = self.keys.tail(kv.key, self.keys.job_runs(*jk))[0]
                got = await self.etcd.get(self.keys.run(jk[0], run_id))
                if got is not None:
                    return Run.model_validate_json(got.value).finished_at
        return None

    def _fresh_put(
        self, jk: JobKey, since: datetime, every: float, *, stale: bool
    ) -> tuple[str, Any]:
        due = since + timedelta(seconds=every)
        key = self.keys.open_slot(*jk, slot_name(due, outcomes.FRESHNESS))
        value = open_slot_value(
            due, outcomes.FRESHNESS, "expected", None, (0, 0), every=every, since=since, stale=stale
        )
        return key, Op.put(key, value)

    async def _freshness(self, jk: JobKey) -> None:
        job = self.job_of(jk)
        key = self.fresh_of.get(jk)
        slot = self.open.get(key) if key else None
        if job is None or not job.expected_every or not job.enabled:
            if slot is not None:
                await self._txn(slot, [Op.delete(slot.key)])
            return
        every = job.expected_every
        now = self.clock()
        if slot is None:  # a new job (or one that just got expected_every): its first period
            have = await self.etcd.range(self.keys.open_slots(*jk), keys_only=True)
            if any(kv.key.endswith(f"-{outcomes.FRESHNESS}") for kv in have.kvs):
                return  # written and not yet seen by the watch: it brings it
            new_key, put = self._fresh_put(jk, now, every, stale=False)
            res = await self.etcd.txn(
                [self.lead.fence(), Compare.absent(new_key)], [put], [self.lead.probe()]
            )
            if not res.succeeded:
                self.lead.check_fenced(res, "fenced slot write rejected")
            return
        last = await self._last_success(jk)
        verdict = outcomes.decide_freshness(
            slot.slot.due, slot.since or now, last, now, stale=slot.stale
        )
        if verdict.outcome is None:
            self._rearm(slot.key, verdict.next_check)
            return
        if verdict.outcome == outcomes.FIRED.name:
            # fresh: the next period starts at that success; only stale periods are logged
            assert last is not None
            new_key, put = self._fresh_put(jk, last, every, stale=False)
            ops: list[Any] = [Op.delete(slot.key), put] if new_key != slot.key else []
            if slot.stale:
                ops += event_ops(self.keys, slot, "recovered", "fired", "a run succeeded again")
                ops.append(Op.delete(self.keys.slot_alarm(*jk)))
            if ops and await self._txn(slot, ops) and slot.stale:
                self.alarms.discard(jk)
                self.outbox.wake()
            return
        # stale: record it (under the job as it is now, not as the cache has it: D367), and open
        # a stale period that waits for the next success
        now_job = (await slot_doc(self.etcd, self.keys, *jk))[0]
        if not isinstance(now_job, Job) or not now_job.expected_every or not now_job.enabled:
            await self._txn(slot, [Op.delete(slot.key)])  # switched off meanwhile: no alarm
            return
        new_key, put = self._fresh_put(jk, slot.slot.due, every, stale=True)
        await self._close(slot, verdict, None, [put], reused=new_key == slot.key)
