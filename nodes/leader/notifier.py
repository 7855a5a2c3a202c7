"""The leader's notifier: tells webhooks and mail boxes about finished runs.

Who sends: the scheduler leader, the one node that sees every outcome (including ``lost``, which
only it decides). It follows the per-job run index (``job-runs/…``, whose value turns into the
final status in the same transaction that finishes a run) with an etcd watch, starting from a
cursor revision kept in etcd (``notifier/cursor``). The cursor moves only past events whose
deliveries are all done (delivered or given up), and only by a write fenced on leadership. So a
new leader resumes where the old one stopped: nothing is lost across leader changes, and what the
old leader sent but had not yet recorded is sent again, with the same ``X-Cronmesh-Delivery`` id
so receivers can drop the duplicate (at-least-once). Deliveries run in their own tasks, retried
with backoff; they never block runs, and failures are logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from cluster.errors import LostOwnership, Unavailable
from cluster.etcd import Compacted, Event, Op, WatchBatch, prefix_end
from cluster.links import with_links
from cluster.models import Job, Run
from cluster.notify import (
    NotificationRule,
    ProjectNotifications,
    delivery_id,
    events_for,
    matching,
    needs_previous,
)
from cluster.watch import follow
from cluster.workflows import is_task_job
from nodes import metrics
from nodes.leader.delivery import Sender
from nodes.leader.history import HistoryAccountant
from nodes.leader.noderetention import NodeRetention

if TYPE_CHECKING:
    from cluster.election import Leadership
    from cluster.etcd import Etcd
    from cluster.keys import Keys
    from cluster.store import Store
    from nodes.config import NodeConfig
    from nodes.leader.scheduler import Scheduler

log = structlog.get_logger(__name__)


class Node(Protocol):
    """What the notifier uses of its node (the daemon's ``Node`` is one)."""

    etcd: Etcd
    keys: Keys
    store: Store | None
    config: NodeConfig


HANDLE_ATTEMPTS = 8  # reading what to send, while etcd is unreachable (about 15 s in all)
CURSOR_EVERY = 0.5
# With nothing delivered since the last save, the cursor is saved this rarely: a new leader then
# re-reads at most this much history, which sends nothing (no rule matched it), and a steady
# load without notification rules costs no cursor writes per run.
CURSOR_IDLE_EVERY = 60.0
DEFAULTS_TTL = 5.0
Edits = tuple[int, int]  # newest edits of a job and of its project's defaults (D410, D413)
NOTIFY_STATUSES = frozenset({"succeeded", "failed", "timed_out", "lost"})
WATCHED_STATUSES = NOTIFY_STATUSES | {"skipped"}  # a skipped slot's run (overlap): ``skipped``


class Notifier:
    def __init__(
        self, node: Node, leadership: Leadership, scheduler: Scheduler | None = None
    ) -> None:
        assert node.store is not None
        self.scheduler = scheduler  # its job cache spares a run read when nobody is to be told
        self.node = node
        self.etcd = node.etcd
        self.keys = node.keys
        self.store = node.store
        self.lead = leadership
        self.sender = Sender(node)  # webhooks and mail, retried (D170, D171)
        self._pending: deque[tuple[int, asyncio.Task[None] | None]] = deque()
        # project -> (read at, its default rules, the read's revision)
        self._defaults: dict[str, tuple[float, list[NotificationRule], int]] = {}
        self._cursor = 0  # saved in etcd
        self._done = 0  # every event up to here is handled
        self._delivered = False  # something was sent since the cursor was last saved
        self._saved_at = time.monotonic()
        self._edited: dict[tuple[str, str], int] = {}  # job -> its newest edit's revision (D410)

    # -- following finished runs -----------------------------------------------------------------

    async def run(self) -> None:
        """Notify until cancelled (leadership ends); never raises for a delivery problem."""
        self.sender.open()
        try:
            self._cursor = self._done = await self._load_cursor()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._follow())
                tg.create_task(self._commit_loop())
        finally:
            for _, task in self._pending:
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for _, t in self._pending if t), return_exceptions=True)
            await self.sender.close()

    async def _load_cursor(self) -> int:
        """The stored cursor; retried while etcd is unreachable (a notifier problem must never
        end the scheduler's term, which runs beside it)."""
        delay = 0.2
        while True:
            try:
                kv = await self.etcd.get(self.keys.notifier_cursor())
                if kv is not None:
                    return int(json.loads(kv.value)["revision"])
                # First leader ever: start now (history is not notified), and record that.
                key = self.keys.notifier_cursor()
                rev = (await self.etcd.range(key, count_only=True)).revision
                await self._write_cursor(rev)
                return rev
            except LostOwnership:
                raise
            except Exception as exc:
                log.warning("notifier cannot read its cursor; retrying", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _follow(self) -> None:
        prefix, jobs = self.keys.job_runs(), self.keys.jobs()
        defaults = self.keys.notification_defaults("")
        seen = [self._cursor]  # the stream's position, for the log of a compaction

        def on_event(ev: Event) -> None:
            key = ev.kv.key
            if key.startswith(prefix):
                if ev.kind == "put" and ev.kv.value.decode() in WATCHED_STATUSES:
                    self._start(ev.kv.mod_revision, key, ev.kv.value.decode())
            elif key.startswith(jobs):  # a job edited: its runs ending later see it (D410)
                project, job = self.keys.tail(key, jobs)[:2]
                self._edited[(project, job)] = ev.kv.mod_revision
            elif key.startswith(defaults):  # a project's defaults edited, likewise (D413)
                self._edited[(key[len(defaults) :], "")] = ev.kv.mod_revision

        def on_batch(batch: WatchBatch, position: int) -> None:
            seen[0] = position
            if batch.events and not any(ev.kv.key.startswith(prefix) for ev in batch.events):
                return  # no run ended: the cursor need not move (not even for its own write)
            self._pending.append((position, None))

        async def skip_compacted(exc: Compacted) -> int:
            # nothing is cached here: go on from now, and say what was dropped
            now = (await self.etcd.range(prefix, count_only=True)).revision
            log.error(
                "notifier cursor compacted away: runs finished in between are not notified",
                cursor=seen[0],
                compacted=exc.revision,
                resume=now,
            )
            metrics.NOTIFICATIONS.labels("any", "dropped").inc()
            seen[0] = now
            self._pending.append((now, None))
            return now

        await follow(
            self.etcd,
            prefix,
            self._cursor,
            on_event,
            what="notifier watch",
            on_batch=on_batch,
            on_compacted=skip_compacted,
            retry_on=(Exception,),  # Unavailable mostly; never end the leader's term
            skip="delete",  # a deleted index key (retention) notifies nothing (D349)
            # the run index, the jobs and the projects' defaults in one order (D410, D413); the
            # node records in between are written rarely (their load: every 10 s at most)
            end=prefix_end(defaults).decode(),
        )

    def _start(self, revision: int, key: str, status: str) -> None:
        project, job, run_id = self.keys.tail(key, self.keys.job_runs())[:3]
        # the newest edits of the job and of its project's defaults before the run's end
        edited = (self._edited.get((project, job), 0), self._edited.get((project, ""), 0))
        if self._nobody(project, job, edited):
            return  # the common case, known now: no task per finished run (D455)
        task = asyncio.create_task(self._handle(project, job, run_id, status, key, edited))
        self._pending.append((revision, task))

    def _cache_current(self, project: str, job: str, edited: int) -> bool:
        """Whether the leader's job cache holds the job as it was when the run ended: at least
        its newest edit (``edited``) this watch delivered before the run's end (D410); for
        ``job`` "", whether the defaults kept hold the project's newest edit (D413)."""
        if not job:
            kept = self._defaults.get(project)
            return kept is not None and kept[2] >= edited
        entry = self.scheduler.jobs.get((project, job)) if self.scheduler else None
        return entry is not None and entry.job_rev >= edited

    def _nobody(self, project: str, job: str, edited: Edits) -> bool:
        """What ``_plan``'s first step would find, known without a read: no rule applies to
        this run (its job's own rules, or the project's defaults as kept, are none)."""
        if not (is_task_job(job) or self._cache_current(project, job, edited[0])):
            return False
        entry = self.scheduler.jobs.get((project, job)) if self.scheduler else None
        own = entry.job.notifications if entry is not None else None
        if own is not None:
            return not own
        return self._kept_defaults(project, edited[1]) == []

    def _kept_defaults(self, project: str, edited: int) -> list[NotificationRule] | None:
        """The project's defaults as kept, while younger than ``DEFAULTS_TTL`` and holding
        their newest edit before the run's end (``edited``, D413); None: to be read."""
        cached = self._defaults.get(project)
        if cached is None or time.monotonic() - cached[0] >= DEFAULTS_TTL:
            return None
        return cached[1] if self._cache_current(project, "", edited) else None

    def _forget_edits(self) -> None:
        """Drop the edits the job cache holds, or of jobs it does not hold (it can only take
        them from a newer event): what is left are the edits its watch has not brought yet."""
        if self._edited and self.scheduler is not None:
            jobs = self.scheduler.jobs
            self._edited = {
                jk: rev
                for jk, rev in self._edited.items()
                if (jk in jobs or not jk[1]) and not self._cache_current(*jk, rev)
            }

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(CURSOR_EVERY)
            while self._pending and (self._pending[0][1] is None or self._pending[0][1].done()):
                self._done = max(self._done, self._pending.popleft()[0])
            self._forget_edits()
            idle = time.monotonic() - self._saved_at < CURSOR_IDLE_EVERY
            if self._done > self._cursor and (self._delivered or not idle):
                self._delivered = False
                try:
                    await self._write_cursor(self._done)
                except LostOwnership:
                    raise
                except Exception as exc:  # retried at the next round
                    log.info("notifier cursor not saved; retrying", error=repr(exc))
                    self._delivered = True
                    continue
                self._cursor = self._done
                self._saved_at = time.monotonic()

    async def _write_cursor(self, revision: int) -> None:
        res = await self.etcd.txn(
            [self.lead.fence()],
            [Op.put(self.keys.notifier_cursor(), json.dumps({"revision": revision}))],
        )
        if not res.succeeded:
            raise LostOwnership("notifier: no longer the leader")

    # -- one finished run ------------------------------------------------------------------------

    async def _project_rules(
        self, project: str, fresh: bool = False, edited: int = 0
    ) -> list[NotificationRule]:
        """The project's defaults: kept ``DEFAULTS_TTL`` seconds unless ``fresh`` or older than
        their newest edit before the run's end (``edited``, D413)."""
        if not fresh and (kept := self._kept_defaults(project, edited)) is not None:
            return kept
        res = await self.etcd.range(self.keys.notification_defaults(project), prefix=False)
        kv = res.kvs[0] if res.kvs else None
        rules = ProjectNotifications.model_validate_json(kv.value).rules if kv else []
        self._defaults[project] = (time.monotonic(), rules, res.revision)
        return rules

    async def _rules(
        self, project: str, job: str, run: Run | None, *, fresh: bool = False, edited: int = 0
    ) -> list[NotificationRule]:
        """The job's rules (the current definition when the leader knows the job — ``fresh``:
        read now, since an edit answered before the run ended may not have reached the cache,
        D368 —, else the run's snapshot), or the project's defaults when the job sets none."""
        entry = self.scheduler.jobs.get((project, job)) if self.scheduler else None
        current = entry.job if entry is not None else None
        if fresh and (kv := await self.etcd.get(self.keys.job(project, job))) is not None:
            with contextlib.suppress(ValueError):  # a newer version's document: the cache's
                current = Job.model_validate_json(kv.value)
        if current is not None:
            own = current.notifications
        elif run is not None:
            own = run.snapshot.notifications
        else:
            own = None
        return own if own is not None else await self._project_rules(project, fresh, edited)

    async def _previous_status(self, project: str, job: str, key: str) -> str | None:
        res = await self.etcd.range(
            self.keys.job_runs(project, job), end=key, limit=50, descending=True
        )
        for kv in res.kvs:
            status = kv.value.decode()
            if status in NOTIFY_STATUSES:
                return status
        return None

    async def _handle(
        self, project: str, job: str, run_id: str, status: str, key: str, edited: Edits = (0, 0)
    ) -> None:
        with structlog.contextvars.bound_contextvars(run=run_id, job=f"{project}/{job}"):
            delay = 0.2
            for attempt in range(1, HANDLE_ATTEMPTS + 1):
                try:
                    todo = await self._plan(project, job, run_id, status, key, edited)
                except LookupError:
                    return  # pruned before we got to it
                except Unavailable as exc:  # etcd blip: the cursor waits for us meanwhile
                    if attempt < HANDLE_ATTEMPTS:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5.0)
                        continue
                    error: Exception = exc
                except Exception as exc:
                    error = exc
                else:
                    await asyncio.gather(*(self.sender.deliver(*item) for item in todo))
                    if todo:  # after the sends: the next cursor save covers them
                        self._delivered = True
                    return
                log.warning("notification skipped", error=repr(error), status=status)
                metrics.NOTIFICATIONS.labels("any", "failed").inc()
                return

    async def _plan(
        self, project: str, job: str, run_id: str, status: str, key: str, edited: Edits = (0, 0)
    ) -> list[tuple[NotificationRule, str, dict[str, Any], str]]:
        """What to send for one finished run: (rule, event, run document, delivery id).
        ``edited``: the revisions of the newest edits of the job and of its project's defaults
        before the run ended (D410, D413); a workflow task's are its project's defaults (D452)."""
        current = is_task_job(job) or self._cache_current(project, job, edited[0])
        if current and not await self._rules(project, job, None, edited=edited[1]):
            return []  # the common case: nobody to tell, no read
        run = await self.store.get_run(project, run_id)
        rules = await self._rules(project, job, run, fresh=True)  # a removed rule sends nothing
        if not rules:
            return []
        previous = None
        if needs_previous(rules, status):
            previous = await self._previous_status(project, job, key)
        doc = run.model_dump(mode="json")
        return [
            (rules[i], event, doc, delivery_id(run_id, run.attempt, event, i))
            for event, i in matching(rules, events_for(status, previous), previous)
        ]

    @property
    def ready(self) -> bool:
        """Deliveries can go (the HTTP session is open: ``run`` has started)."""
        return self.sender.ready

    async def deliver_slot(
        self, project: str, job: str, event: str, doc: dict[str, Any], delivery: str
    ) -> None:
        """A slot event (D232) to every rule of the job that asks for it; returns once each
        delivery is done (sent or given up)."""
        rules = await self._rules(project, job, None, fresh=True)
        doc = with_links(self.node.config.public_url, doc)  # the job's page (D256)
        await asyncio.gather(
            *(
                self.sender.deliver(rule, event, doc, f"{delivery}-{i}")
                for i, rule in enumerate(rules)
                if event in rule.on
            )
        )


async def lead_with_notifier(scheduler: Scheduler, node: Node, leadership: Leadership) -> None:
    """Run the scheduler loop, the notifier, the node retention (D255) and the run-history
    count (D318) together for one term of leadership."""
    forget = NodeRetention(node.etcd, node.keys, node.clock, node.config.node_retention)
    notifier = Notifier(node, leadership, scheduler)
    scheduler.slots.outbox.notifier = notifier  # slot events go out through the same rules (D232)
    history = HistoryAccountant(node.etcd, scheduler.store, leadership)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(scheduler.run())
        # they start with reads of their own (the run index since the cursor, every charge):
        # once the scheduler's first pass is written, so a new leader's ticks go first (D411)
        for loop in (notifier.run, forget.run, history.run):
            tg.create_task(scheduler.after_first_pass(loop))
