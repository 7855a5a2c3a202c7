"""The scheduling leader's in-memory picture: jobs, schedule states, active runs, and when each job
is next due. One consistent read (``load``), then watches from that revision (``follow``) of the
jobs and active runs; schedule states only as its own writes leave them (D433).

With sharding (D301) a shard leader keeps only its shard's jobs; shard 0's leader, which also
runs the per-cluster loops (reaper, retention, deadlines, notifier: D302), keeps every job and
every active run for them but fires (puts in the due queue) only its own shard's jobs. The shard
leaders of one node share one watch per prefix (``nodes.leader.feed``, D356).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from cluster.cron import Schedule
from cluster.errors import Unavailable
from cluster.etcd import Compare, Etcd
from cluster.keys import Keys
from cluster.models import Job, ScheduleSpec
from cluster.outcomes import slot_deadlines
from cluster.shards import Shard
from cluster.tickplan import parse_job
from cluster.watch import Handler, KnownKeys, follow
from nodes.leader.feed import Feed, Subscription
from nodes.leader.loading import load_jobs
from nodes.leader.loops import DueQueue

log = structlog.get_logger(__name__)

JobKey = tuple[str, str]
GUARDED = ("forbid", "replace")  # overlap policies whose ticks depend on the active runs
MAX_GUARDED = 64  # a job with more active runs is planned without the guard (D370)


@dataclass
class JobEntry:
    job: Job
    schedules: list[tuple[ScheduleSpec, Schedule]]
    state: dict[str, Any] = field(default_factory=dict)
    state_rev: int = 0
    deadlines: dict[str, tuple[float, float]] = field(default_factory=dict)
    job_rev: int = 0  # the job document's mod revision (tick transactions compare it, D369)


class JobCache:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        *,
        clock: Callable[[], datetime],
        shard: Shard | None = None,
        feed: Feed | None = None,
    ) -> None:
        self.etcd = etcd
        self.feed = feed  # the node's shared watches (D356); None: watches of its own
        self._subs: list[Subscription] = []
        self.keys = keys
        self.clock = clock
        self.shard = shard or Shard()
        # shard 0 keeps every job (its per-cluster loops need them); the others their own only
        self.keeps_all = self.shard.singletons
        # hooks: a job appeared or changed; a run's active key went (the slot watcher's)
        self.on_job_changed: Callable[[JobKey], None] = lambda jk: None
        self.on_run_moved: Callable[[str, JobKey], None] = lambda run_id, jk: None
        self.jobs: dict[JobKey, JobEntry] = {}
        self.active: dict[JobKey, set[str]] = defaultdict(set)
        self.active_job: dict[str, JobKey] = {}
        self.due: DueQueue[JobKey] = DueQueue(clock)
        self.actives_rev = 0  # revision of the newest active-key event seen
        self._read_at: dict[JobKey, int] = {}  # jobs read out of their watch's turn (D369)
        self._actives_read: dict[JobKey, int] = {}  # active sets read so, likewise (D370)
        self.took: dict[str, float] = {}  # seconds of each part of ``load`` (the leader's log)

    def fires(self, jk: JobKey) -> bool:
        return self.shard.owns(*jk)

    def _kept(self, jk: JobKey) -> bool:
        return self.keeps_all or self.shard.owns(*jk)

    def job_of(self, jk: JobKey) -> Job | None:
        entry = self.jobs.get(jk)
        return entry.job if entry is not None else None

    def _key_of(self, key: str, base: str) -> tuple[str, ...]:
        return tuple(self.keys.tail(key, base))

    async def load(self) -> int:
        """Every job and schedule state, then every active run, at one revision (D262). With a
        node's shared watches (D356), joined first: they hold what changes during the read; and
        with K > 1 read together with the node's other shards that start now (D432)."""
        t0 = time.perf_counter()
        if self.feed is not None and not self._subs:
            feed, shard = self.feed, self.shard
            joins = [  # the three at once: a round trip each (D411)
                asyncio.ensure_future(feed.subscribe(prefix, shard, handle, known, every=every))
                for prefix, handle, known, every in self._watched()
            ]
            try:
                self._subs = list(await asyncio.gather(*joins))
            except BaseException:  # leave the ones that joined
                for join in joins:
                    join.cancel()
                await asyncio.gather(*joins, return_exceptions=True)
                self._subs = [j.result() for j in joins if not j.cancelled() and not j.exception()]
                self.close()
                raise
        t1 = time.perf_counter()
        if self.feed is not None and self.shard.count > 1:  # one read for the node's shards, D432
            rev = await self.feed.loads.load(self.keys, self)
            t2 = time.perf_counter()
        else:
            rev = await load_jobs(self.etcd, self.keys, self.on_job, self.on_state)
            t2 = time.perf_counter()
            actives = await self.etcd.range_all(self.keys.actives(), revision=rev, keys_only=True)
            for kv in actives.kvs:
                self.on_active(kv.key, True)
        self.actives_rev = rev  # every active key up to it is known
        self.took = {"join": t1 - t0, "jobs": t2 - t1, "actives": time.perf_counter() - t2}
        return rev

    def follow(self, tg: asyncio.TaskGroup, rev: int) -> None:
        """Watch jobs, schedule states and active runs from ``rev`` (tasks of ``tg``): through
        the node's shared watches when there are (``load`` joined them), else watches of its
        own."""
        if self._subs:
            for sub in self._subs:
                tg.create_task(sub.run(rev))
            return
        for prefix, handle, known, _ in self._watched():
            tg.create_task(follow(self.etcd, prefix, rev, handle, known))

    def close(self) -> None:
        """Leave the shared watches (idempotent; the scheduler's term ends)."""
        subs, self._subs = self._subs, []
        for sub in subs:
            sub.close()

    def _watched(self) -> list[tuple[str, Handler, KnownKeys, bool]]:
        """(prefix, handler, known keys, every job's events) of each watch: shard 0 keeps every
        job and active run (D301). Schedule states are read at the load and not followed
        (D433): only this shard's leader writes its jobs' states, so the cache holds them from
        its own writes; a job's deletion takes its state along and comes as the job's event;
        anything else is found by the state CAS of the next tick, whose refused write reads the
        state back (``Scheduler._write``)."""
        keys = self.keys
        return [
            (
                keys.jobs(),
                lambda ev: self.on_job(
                    ev.kv.key, ev.kv.value if ev.kind == "put" else None, ev.kv.mod_revision
                ),
                lambda: {keys.job(*jk) for jk in self.jobs},
                self.keeps_all,
            ),
            (
                keys.actives(),
                lambda ev: self.on_active(ev.kv.key, ev.kind == "put", ev.kv.mod_revision),
                lambda: {keys.active(*jk, r) for jk, runs in self.active.items() for r in runs},
                self.keeps_all,
            ),
        ]

    def on_job(self, key: str, value: bytes | None, rev: int = 0) -> None:
        project, name = self._key_of(key, self.keys.jobs())[:2]
        jk = (project, name)
        if not self._kept(jk):  # another shard's job: not even parsed (D301)
            return
        if rev and rev <= self._read_at.get(jk, 0):
            return  # older than what a refused tick read (D369)
        self._read_at.pop(jk, None)
        if value is None:
            self.jobs.pop(jk, None)
            return
        try:
            job = Job.model_validate_json(value)
            schedules = parse_job(job)
        except Exception as exc:  # a job written by a newer version, or corrupted by hand
            log.error("cannot read job; ignoring it", job=f"{project}/{name}", error=str(exc))
            self.jobs.pop(jk, None)
            return
        old = self.jobs.get(jk)
        entry = JobEntry(job, schedules, deadlines=slot_deadlines(job), job_rev=rev)
        if old is not None:
            entry.state, entry.state_rev = old.state, old.state_rev
        self.jobs[jk] = entry
        self.reschedule(jk, self.clock())
        self.on_job_changed(jk)

    def on_state(self, key: str, value: bytes | None, rev: int) -> None:
        project, name = self._key_of(key, self.keys.schedule_states())[:2]
        jk = (project, name)
        entry = self.jobs.get(jk)
        if entry is None or rev <= entry.state_rev or not self.fires(jk):
            return
        entry.state = json.loads(value) if value else {}
        entry.state_rev = rev if value else 0
        self.reschedule(jk, self.clock())

    def on_active(self, key: str, present: bool, rev: int = 0) -> None:
        self.actives_rev = max(self.actives_rev, rev)
        project, job, run_id = self._key_of(key, self.keys.actives())[:3]
        jk = (project, job)
        if not self._kept(jk) or (rev and rev <= self._actives_read.get(jk, 0)):
            return  # another shard's, or older than the job's active runs as read (D370)
        if present:
            self.active[jk].add(run_id)
            self.active_job[run_id] = jk
        else:
            self.active[jk].discard(run_id)
            self.active_job.pop(run_id, None)
            self.on_run_moved(run_id, jk)

    def reschedule(self, jk: JobKey, now: datetime) -> None:
        entry = self.jobs.get(jk)
        if entry is None:
            return
        due = entry.job.enabled and entry.schedules and self.fires(jk)
        self.due.set(jk, now if due else None)

    def schedule_at(self, jk: JobKey, when: datetime | None) -> None:
        if jk in self.jobs:
            self.due.set(jk, when, wake=False)

    async def job_moved(self, jk: JobKey) -> bool:
        """A tick transaction was refused: whether the job changed since the cached copy (its
        watch is behind the write that answered the user), which then replaces it (D369)."""
        entry = self.jobs.get(jk)
        res = await self.etcd.range(self.keys.job(*jk), prefix=False)
        kv = res.kvs[0] if res.kvs else None
        if entry is None or (kv.mod_revision if kv else 0) == entry.job_rev:
            return False
        self.on_job(self.keys.job(*jk), kv.value if kv else None, res.revision)
        self._read_at[jk] = res.revision  # the watch's older events of this job are stale now
        if kv is not None and jk in self.jobs:
            self.jobs[jk].job_rev = kv.mod_revision
        return True

    def active_guard(self, jk: JobKey) -> list[Any]:
        """For a job whose ticks depend on its active runs (overlap ``forbid``/``replace``),
        the compares that those are the runs the plan counted: each still there, none created
        since the cache knew them all (D370); none for other jobs."""
        entry = self.jobs.get(jk)
        ids = self.active.get(jk, set())
        if entry is None or entry.job.overlap not in GUARDED or len(ids) > MAX_GUARDED:
            return []
        since = max(self.actives_rev, self._actives_read.get(jk, 0))
        present = [Compare.exists(self.keys.active(*jk, r)) for r in sorted(ids)]
        return [*present, Compare.unchanged_since(self.keys.actives(*jk), since)]

    async def actives_moved(self, jk: JobKey) -> bool:
        """A tick transaction was refused: whether the job's active runs differ from the
        cache's (a run ended, or one was created, that the watch has not brought yet); the
        read replaces them (D370)."""
        entry = self.jobs.get(jk)
        if entry is None or entry.job.overlap not in GUARDED:
            return False
        since = max(self.actives_rev, self._actives_read.get(jk, 0))
        res = await self.etcd.range(self.keys.actives(*jk), keys_only=True, limit=MAX_GUARDED)
        now = {kv.key.rsplit("/", 1)[-1] for kv in res.kvs}
        cached = set(self.active.get(jk, ()))
        for run_id in cached - now:
            self.on_active(self.keys.active(*jk, run_id), False)
        for run_id in now - cached:
            self.on_active(self.keys.active(*jk, run_id), True)
        self._actives_read[jk] = res.revision
        return now != cached or any(kv.mod_revision > since for kv in res.kvs)

    async def refresh_state(self, jk: JobKey) -> None:
        with contextlib.suppress(Unavailable):
            kv = await self.etcd.get(self.keys.schedule_state(*jk))
            entry = self.jobs.get(jk)
            if entry is not None:
                entry.state = json.loads(kv.value) if kv else {}
                entry.state_rev = kv.mod_revision if kv else 0
