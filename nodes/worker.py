"""The worker: claims queued runs with a lease-bound transaction, executes them, and finishes them
with a write that compares its claim (only the current claim may finish a run).

Three etcd writes per run: the leader's creation, the worker's claim, the worker's completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic_core import to_json

from cluster.errors import CronmeshError, Unavailable
from cluster.etcd import (
    KV,
    Compacted,
    Compare,
    Etcd,
    LeaseGone,
    Op,
    OutcomeUnknown,
    Rejected,
)
from cluster.keys import Keys
from cluster.masking import MaskedOutput, mask_result
from cluster.models import Run, secret_refs
from cluster.placement import Candidate, attempt_key, decide_claim, fits, preferred
from cluster.plan import slot_limit
from cluster.resources import format_bytes
from cluster.runas import NodeRunAs, decide
from cluster.secret_store import SecretStore
from cluster.selector import matches, parse_selector
from cluster.session import Session
from cluster.store import Store, Stored, dumps
from cluster.txnbatch import TxnBatcher
from logstore.service import Logs
from logstore.spool import LogRef, SpoolWriter
from nodes import jobenv, metrics, runas, workdir
from nodes.cgroups import RunCgroup, Usage, cgroup_io
from nodes.cluster_view import ClusterView
from nodes.containment import Containment
from nodes.executor import ExitStatus, Process

log = structlog.get_logger(__name__)

MAX_RESULT = 64 * 1024
ORPHAN_CHECK_EVERY = 5.0
EXECUTED_KEPT = 4096  # attempts remembered as run here, so the orphan check never reruns one
# A run due at a known instant (``not_before``: materialised ahead by the leader, or a retry's
# backoff) is claimed this long before it, so the claim's round trip is over by then and the
# process starts on a local timer at the instant itself. Short on purpose: a node that dies
# holding a claimed run that has not started yet loses it like a running one (D120).
CLAIM_AHEAD = 0.75
IDENTITY_TTL = 30.0  # s a resolved run_as user (uid, gid, home) is reused before a new lookup


@dataclass
class Execution:
    run: Run
    claim_revision: int
    slot: str | None
    proc: Process | None = None
    requested: str | None = None  # "cancel" | "abort" | "shutdown" | "timeout"
    acted: bool = False  # the request reached a live process (else the exit status decides)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # a request while waiting to start
    cost: int = 1  # units of the node's weight budget this run holds
    output_bytes: int | None = None  # what the job wrote, once its log is closed
    logged: bool = True  # False: nothing at all was written, so no log object will exist
    usage: Usage | None = None  # what the run's cgroup counted (None: no cgroup)
    reason: str | None = None  # "oom_killed" when the out-of-memory killer ended it
    _stopper: asyncio.Task[None] | None = None

    def request(self, action: str) -> None:
        """Record a cancel/abort/shutdown; act on the process now, or as soon as it exists."""
        if self.requested is not None and action != "abort":
            return
        self.requested = action
        self.wake.set()
        self.act()

    def act(self) -> None:
        if self.proc is None or self.requested is None or self.proc.returncode_ready:
            return
        self.acted = True
        if self.requested == "abort":
            self.proc.kill()
        elif self._stopper is None:
            grace = self.run.snapshot.kill_grace
            self._stopper = asyncio.get_running_loop().create_task(self.proc.stop(grace))


class Releases:
    """Armed processes due at the same instant, released together by one timer callback: at the
    instant the loop does nothing but one write per process, before any of their coroutines
    resumes (100 runs due together are all released within about a millisecond)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._due: dict[datetime, list[tuple[Process, asyncio.Future[datetime | None]]]] = {}

    def add(self, when: datetime, proc: Process) -> asyncio.Future[datetime | None]:
        """A future set at the release: its time, or None when the process could not be
        released (it died). Cancel the future to withdraw the process."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[datetime | None] = loop.create_future()
        batch = self._due.get(when)
        if batch is None:
            batch = self._due[when] = []
            delay = (when - self._clock()).total_seconds()
            loop.call_later(max(0.0, delay), self._release, when)
        batch.append((proc, fut))
        return fut

    def _release(self, when: datetime) -> None:
        early = (when - self._clock()).total_seconds()
        if early > 0:  # loop timers may fire a hair early (uvloop's cached time): never start early
            asyncio.get_running_loop().call_later(early, self._release, when)
            return
        batch = [(p, f) for p, f in self._due.pop(when, []) if not f.done()]
        ok = [p.release() for p, _ in batch]
        now = self._clock()
        for (_, fut), released in zip(batch, ok, strict=True):
            fut.set_result(now if released else None)


class Alarm:
    """One pending call of ``callback`` at a loop time; asking for an earlier time moves it, a
    later one is ignored. Keeps the deadline itself: uvloop answers ``call_later(0)`` with a
    plain ``Handle``, which has no ``when()``."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.Handle | None = None
        self._when = math.inf

    @property
    def when(self) -> float:
        return self._when

    def at(self, when: float) -> None:
        if self._handle is not None:
            if self._when <= when:
                return
            self._handle.cancel()
        loop = asyncio.get_running_loop()
        self._when = when
        self._handle = loop.call_later(max(0.0, when - loop.time()), self._fire)

    def _fire(self) -> None:
        self._handle, self._when = None, math.inf
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._when = None, math.inf


class Worker:
    def __init__(
        self,
        *,
        etcd: Etcd,
        keys: Keys,
        store: Store,
        session: Session,
        node_id: str,
        properties: Mapping[str, str],
        capacity: int,
        logs: Logs,
        work_dir: str,
        clock: Callable[[], datetime],
        view: ClusterView | None = None,
        weight_budget: int | None = None,
        handoff_delay: float = 1.0,
        job_env: Mapping[str, str] | None = None,
        run_as: NodeRunAs | None = None,
        run_uids: runas.RunUids | None = None,
        containment: Containment | None = None,
        secrets: SecretStore | None = None,
    ) -> None:
        self.etcd = etcd
        self.containment = containment
        self.secrets = secrets  # read and decrypted when a run that references them starts
        self.keys = keys
        self.store = store
        # Claims and completions go to etcd together when several wait (group commit, D137).
        self.batch = TxnBatcher(etcd, observe=metrics.TXN_BATCH.observe)
        self.session = session
        self.node_id = node_id
        self.properties = dict(properties)
        self.capacity = capacity
        self.logs = logs
        self.work_dir = work_dir
        self.clock = clock
        # Placement (docs/placement.md): the cluster view decides which queued runs are ours.
        self.view = view
        self.weight_budget = weight_budget
        self.handoff_delay = handoff_delay
        self.claim_ahead = CLAIM_AHEAD
        self._seen: dict[str, float] = {}  # queue key -> when this worker first found it claimable
        self._claim_cost: dict[str, int] = {}
        self._best: dict[str, tuple[int, Candidate | None]] = {}  # key -> (view version, pref.)
        if view is not None:
            view.on_change = self.kick
        self.running: dict[str, Execution] = {}
        self._executed: dict[str, int] = {}  # run id -> attempt, the latest EXECUTED_KEPT ended
        self.candidates: dict[str, KV] = {}
        self.claiming: set[str] = set()
        self.accepting = True
        self._parsed: dict[str, tuple[int, Run]] = {}
        self._controls: dict[str, str] = {}
        self._claiming_runs: set[str] = set()
        self._claiming_jobs: set[tuple[str, str]] = set()  # limited jobs with a claim in flight
        self._orphan_check = asyncio.Event()  # run id -> requested action (control keys present)
        self._kick = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._alarm = Alarm(self.kick)
        self._releases = Releases(clock)
        self._work = Path(work_dir)
        self._work.mkdir(parents=True, exist_ok=True)
        left = workdir.clean_leftovers(self._work)
        if left:
            log.info("removed run folders left by an earlier process", count=left)
        # The node's part of every job's environment, by allow-list (D140); None: the default
        # allow-list over this process's environment.
        self._base_env = dict(job_env) if job_env is not None else jobenv.base_env(os.environ)
        self._python_path = jobenv.python_path(os.environ)
        # Which user runs run as (D142); None: as the node itself, whatever the job asks.
        self.run_as = run_as
        self.run_uids = run_uids  # per-run uids (D205), when run_as_default is dynamic
        self._setpriv: str | None = None
        self._identities: dict[tuple[str | None, str | None], tuple[runas.Identity, float]] = {}

    # -- loops ---------------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow(self.keys.queue(), self._on_queue, reset=self._reset_queue))
            tg.create_task(
                self._follow(self.keys.controls(), self._on_control, reset=self._controls.clear)
            )
            tg.create_task(self._adopt_orphans())
            tg.create_task(self._dispatch_loop())
            if self.view is not None:
                tg.create_task(self.view.run())

    async def _follow(
        self,
        prefix: str,
        handle: Callable[[str, KV | None], None],
        reset: Callable[[], None] | None = None,
    ) -> None:
        """Read a prefix, then watch it from that revision; start over when the watch breaks."""
        delay = 0.1
        while True:
            try:
                res = await self.etcd.range_all(prefix)
                if reset is not None:
                    reset()
                for kv in res.kvs:
                    handle(kv.key, kv)
                async for batch in self.etcd.watch(prefix, start_revision=res.revision + 1):
                    delay = 0.1
                    for ev in batch.events:
                        handle(ev.kv.key, ev.kv if ev.kind == "put" else None)
            except (Unavailable, Compacted) as exc:
                log.info("watch interrupted; re-reading", prefix=prefix, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _reset_queue(self) -> None:
        self.candidates.clear()
        self._seen.clear()
        self._best.clear()

    def _on_queue(self, key: str, kv: KV | None) -> None:
        if kv is None:
            self.candidates.pop(key, None)
            self._parsed.pop(key, None)
            self._seen.pop(key, None)
            self._best.pop(key, None)
        else:
            self.candidates[key] = kv
        self.kick()

    def _on_control(self, key: str, kv: KV | None) -> None:
        run_id = key.rsplit("/", 1)[-1]
        if kv is None:
            self._controls.pop(run_id, None)
            return
        action = "abort" if json.loads(kv.value).get("action") == "abort" else "cancel"
        # Remembered even if the run is not (yet) ours: the watch may deliver a request before
        # the claim's reply is processed; a new execution looks here when it registers.
        self._controls[run_id] = action
        ex = self.running.get(run_id)
        if ex is not None:
            log.info("control request", run=run_id, action=action)
            ex.request(action)

    def kick(self) -> None:
        self._kick.set()

    def _kick_at(self, delay: float) -> None:
        """Dispatch again after ``delay`` (one pending timer: the earliest wins)."""
        self._alarm.at(asyncio.get_running_loop().time() + delay)

    def _run_of(self, key: str, kv: KV) -> Run | None:
        cached = self._parsed.get(key)
        if cached is not None and cached[0] == kv.mod_revision:
            return cached[1]
        try:
            run = Run.model_validate_json(kv.value)
        except ValueError as exc:
            log.error("unreadable queue entry", key=key, error=str(exc))
            return None
        self._parsed[key] = (kv.mod_revision, run)
        return run

    def _choose(self, key: str, run: Run) -> tuple[Candidate, str] | None:
        """Whether this node should claim ``run`` now, through which binding (its cost), and
        why (``preferred`` or ``handoff``)."""
        target = run.snapshot.target
        run_as = run.snapshot.run_as
        user = run_as.user if run_as is not None else None
        if self.run_as is not None and user is not None:
            # the node's own policy decides locally, whatever the view says
            if decide(user, run_as.group if run_as else None, self.run_as).refusal is not None:
                return None
        if self.view is None:
            if target.group is None and matches(parse_selector(target.selector), self.properties):
                return Candidate(self.node_id, 1), "preferred"
            return None
        if user is not None and user not in self.view.project_users.get(run.project, ()):
            return None  # the project may not (or no longer) run jobs as this user
        placement = self.view.placement(target.group, target.selector, run.project, user)
        cached = self._best.get(key)
        if cached is None or cached[0] != self.view.version:
            draw = attempt_key(run.id, run.attempt)
            cached = (self.view.version, preferred(draw, placement.candidates))
            self._best[key] = cached
        mono = time.monotonic()
        first = self._seen.setdefault(key, mono)
        decision = decide_claim(
            self.node_id,
            attempt_key(run.id, run.attempt),
            placement,
            waited=mono - first,
            handoff_delay=self.handoff_delay,
            best=cached[1],
        )
        if decision.wait is not None:
            self._kick_at(decision.wait)
        if not decision.claim or decision.candidate is None:
            return None
        return decision.candidate, "preferred" if decision.preferred else "handoff"

    def used_weight(self) -> int:
        return sum(ex.cost for ex in self.running.values()) + sum(self._claim_cost.values())

    async def _dispatch_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            self._dispatch()

    def _dispatch(self) -> None:
        if not self.accepting or self.session.lost.is_set():
            return
        if self.view is not None and not self.view.ready:
            return  # kicked again when the view has loaded
        now = self.clock()
        for key in sorted(self.candidates):
            if len(self.running) + len(self.claiming) >= self.capacity:
                return
            if key in self.claiming:
                continue
            kv = self.candidates[key]
            run = self._run_of(key, kv)
            if run is None:
                continue
            if run.not_before is not None:
                early = (run.not_before - now).total_seconds() - self.claim_ahead
                if early > 0:
                    self._kick_at(early)
                    continue
            limited = slot_limit(run.snapshot.overlap, run.snapshot.max_parallel) > 0
            if limited and (run.project, run.job) in self._claiming_jobs:
                # One claim at a time per limited job, the oldest first: two claims in flight
                # could both see the same slot free, and the later run could win it.
                continue
            choice = self._choose(key, run)
            if choice is None:
                continue
            chosen, via = choice
            if not fits(
                running=len(self.running) + len(self.claiming),
                used_weight=self.used_weight(),
                cost=chosen.weight,
                capacity=self.capacity,
                weight_budget=self.weight_budget,
            ):
                continue  # over the weight budget: a lighter run further down may still fit
            self.claiming.add(key)
            self._claiming_runs.add(run.id)
            if limited:
                self._claiming_jobs.add((run.project, run.job))
            self._claim_cost[key] = chosen.weight
            guards = self._grant_guards(run, chosen)
            self._spawn(self._claim(key, kv, run, chosen.weight, via, guards))

    def _grant_guards(self, run: Run, chosen: Candidate) -> list[Any]:
        """Compares that make a claim exact against grants (D155): the group record that let the
        project reach this node is unchanged since the view read it (a revoked grant fails the
        claim even before the watch delivers it); a node the project reaches as a shared node
        was not bound to a group since (which would have reserved it)."""
        if self.view is None:
            return []
        guards: list[Any] = []
        if run.snapshot.run_as is not None:
            # the project's run_as grant is what the view read: a user revoked just now fails
            # the claim even before the watch delivers the change (D142)
            rev = self.view.project_revision(run.project)
            guards.append(Compare.modified(self.keys.project(run.project), rev))
        if chosen.grant is not None:
            rev = self.view.group_revision(chosen.grant)
            return [*guards, Compare.modified(self.keys.group(chosen.grant), rev)]
        if run.snapshot.target.group is None:
            since = self.view.bindings_revision
            return [*guards, Compare.unchanged_since(self.keys.bindings(), since)]
        return guards

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker task failed", error=repr(task.exception()))

    # -- claiming ------------------------------------------------------------------------------

    async def _free_slot(self, run: Run) -> tuple[bool, str | None]:
        limit = slot_limit(run.snapshot.overlap, run.snapshot.max_parallel)
        if not limit:
            return True, None
        res = await self.etcd.range(self.keys.slots(run.project, run.job), keys_only=True)
        used = {int(kv.key.rsplit("/", 1)[-1]) for kv in res.kvs}
        for i in range(limit):
            if i not in used:
                return True, self.keys.slot(run.project, run.job, i)
        return False, None

    async def _claim(
        self,
        key: str,
        kv: KV,
        run: Run,
        cost: int = 1,
        via: str = "preferred",
        guards: list[Any] | None = None,
    ) -> None:
        try:
            ok, slot = await self._free_slot(run)
            if not ok:
                metrics.CLAIMS.labels("no_slot").inc()
                self._kick_at(0.2)
                return
            now = self.clock()
            started = run.model_copy()
            started.status = "running"
            started.node = self.node_id
            # claimed ahead of its instant: it starts then (``_run_process`` waits)
            due = run.not_before if run.not_before is not None and run.not_before > now else None
            started.started_at = due or now
            started.not_before = due
            lease = self.session.lease_id
            control = self.keys.control(run.id)
            compares = [Compare.modified(key, kv.mod_revision), Compare.absent(control)]
            compares += guards or []
            if self.view is not None:
                # Drain/disable is exact: a claim made after the operator's write fails.
                compares.append(
                    Compare.modified(self.keys.node_state(self.node_id), self.view.own_state()[1])
                )
            ops = [
                Op.delete(key),
                Op.put(
                    self.keys.claim(run.id),
                    dumps(
                        {
                            "node": self.node_id,
                            "project": run.project,
                            "job": run.job,
                            "attempt": run.attempt,
                            "weight": cost,
                        }
                    ),
                    lease,
                ),
                Op.put(self.keys.run(run.project, run.id), started.model_dump_json()),
            ]
            if slot is not None:
                compares.append(Compare.absent(slot))
                ops.append(Op.put(slot, run.id, lease))
            res = await self.batch.txn(compares, ops, [Op.get(control), Op.get(key)])
            if not res.succeeded:
                if res.range_kvs(0) and res.range_kvs(1):
                    # Cancelled while queued: finish it as cancelled instead of running it.
                    await self.store.cancel_pending(
                        Stored(run, kv.mod_revision), "cancelled before it started"
                    )
                metrics.CLAIMS.labels("lost_race").inc()
                if slot is not None:
                    self._kick_at(0.05)
                return
            metrics.CLAIMS.labels("won").inc()
            metrics.PLACED.labels(via).inc()
            self.candidates.pop(key, None)
            self._start(started, res.revision, slot, cost)
        except LeaseGone:
            log.warning("claim rejected: lease gone", run=run.id)
            self.session.lost.set()
        except (Unavailable, OutcomeUnknown) as exc:
            # An unknown claim outcome is resolved by reading back: _adopt_orphans finds a claim
            # of ours that no execution holds and runs it.
            if isinstance(exc, OutcomeUnknown):
                metrics.OUTCOME_UNKNOWN.labels("claim").inc()
            log.warning("claim outcome unknown; will read back", run=run.id, error=str(exc))
            self._orphan_check.set()
        finally:
            self.claiming.discard(key)
            self._claim_cost.pop(key, None)
            self._claiming_runs.discard(run.id)
            self._claiming_jobs.discard((run.project, run.job))
            self.kick()

    async def _adopt_orphans(self) -> None:
        """Claims bound to our lease that no execution holds (a claim whose reply was lost) are
        adopted: the run is started as if the claim had answered."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._orphan_check.wait(), ORPHAN_CHECK_EVERY)
            self._orphan_check.clear()
            try:
                res = await self.etcd.range_all(self.keys.claims())
                for kv in res.kvs:
                    run_id = kv.key.rsplit("/", 1)[-1]
                    if kv.lease != self.session.lease_id or run_id in self.running:
                        continue
                    if run_id in self._claiming_runs:
                        continue
                    claim = json.loads(kv.value)
                    if self._executed.get(run_id) == claim.get("attempt"):
                        # We ran this attempt and could not record its end: never run it again
                        # here. Giving the claim up lets the leader record the attempt as lost
                        # (retried if its policy says so), as if this node had died.
                        log.error("giving up the claim of an attempt already run", run=run_id)
                        await self.etcd.txn(
                            [Compare.created(kv.key, kv.create_revision)], [Op.delete(kv.key)]
                        )
                        continue
                    project = claim["project"]
                    run = await self.store.get_run(project, run_id)
                    if run.status != "running" or run.node != self.node_id:
                        continue
                    slots = await self.etcd.range(self.keys.slots(run.project, run.job))
                    slot = next((s.key for s in slots.kvs if s.value.decode() == run_id), None)
                    log.warning("adopting a claim whose reply was lost", run=run_id)
                    self._start(run, kv.create_revision, slot, int(claim.get("weight", 1)))
            except (Unavailable, LookupError) as exc:
                log.info("orphan check failed", error=str(exc))
                self._orphan_check.set()
                await asyncio.sleep(1)

    # -- executing -----------------------------------------------------------------------------

    def _start(self, run: Run, claim_rev: int, slot: str | None, cost: int = 1) -> None:
        """Register the execution at once (so control requests find it), then run it."""
        if self.session.lost.is_set():
            return  # the claim vanished with the lease; the leader will reap and retry it
        ex = Execution(run, claim_rev, slot, cost=cost)
        self.running[run.id] = ex
        metrics.RUNNING.set(len(self.running))
        if run.id in self._controls:
            ex.request(self._controls[run.id])
        self._spawn(self._execute(ex))

    def _command(
        self,
        run: Run,
        claim_rev: int,
        result_file: Path,
        secrets: Mapping[str, bytes] | None = None,
    ) -> tuple[list[str], dict[str, str]]:
        env = self._base_env.copy()  # a dict copy, not a re-decoding of os.environ per run
        # The job's own env: plain values, and secrets (opened at start, never stored). Set
        # before the run variables, which it cannot name anyway (CRONMESH_* is refused).
        for name, value in run.snapshot.env.items():
            if isinstance(value, str):
                env[name] = value
            elif secrets is not None and value.secret in secrets:
                # bytes as given (no NUL): the surrogate escape gives them back unchanged at exec
                env[name] = secrets[value.secret].decode("utf-8", "surrogateescape")
        env.update(
            CRONMESH_RUN_ID=run.id,
            CRONMESH_PROJECT=run.project,
            CRONMESH_JOB=run.job,
            CRONMESH_ATTEMPT=str(run.attempt),
            CRONMESH_SCHEDULED_AT=(
                run.scheduled_at.isoformat().replace("+00:00", "Z") if run.scheduled_at else ""
            ),
            CRONMESH_NODE=self.node_id,
            CRONMESH_CLAIM_REVISION=str(claim_rev),
            CRONMESH_RESULT_FILE=str(result_file),
        )
        for name, value in run.parameters.items():
            env[f"CRONMESH_PARAM_{name.upper()}"] = value
        env.update(run.env)  # workflow tasks: execution id, task name, upstream results
        spec = run.snapshot
        if spec.python is not None:
            env["CRONMESH_PYTHON"] = spec.python.model_dump_json()
            env["PYTHONPATH"] = self._python_path
            return [sys.executable, "-m", "nodes.pyjob"], env
        return ["/bin/sh", "-c", spec.command or ""], env

    async def _execute(self, ex: Execution) -> None:
        run = ex.run
        t0 = time.monotonic()
        structlog.contextvars.bind_contextvars(run=run.id, job=f"{run.project}/{run.job}")
        exit_status: ExitStatus | None = None
        result: Any = None
        try:
            status, error, exit_status, result = await self._run_process(ex)
        except asyncio.CancelledError:
            # The node lost its lease or is going away: kill everything, write nothing.
            if ex.proc is not None:
                ex.proc.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(ex.proc.wait()), 5)
            self.running.pop(run.id, None)
            ex.done.set()
            raise
        except Exception as exc:
            # A local failure (disk full, unreadable files): the run fails, it never leaks.
            log.exception("run failed on this node", run=run.id)
            if ex.proc is not None:
                ex.proc.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(ex.proc.wait()), 5)
            status, error = "failed", f"node {self.node_id} could not run it: {exc!r}"
        finally:
            structlog.contextvars.unbind_contextvars("run", "job")
        try:
            await self._complete(ex, status, exit_status, error, result)
        finally:
            self._executed[run.id] = run.attempt
            if len(self._executed) > EXECUTED_KEPT:
                self._executed.pop(next(iter(self._executed)))
            self.running.pop(run.id, None)
            metrics.RUNNING.set(len(self.running))
            ex.done.set()
            self.kick()
        log.info(
            "run finished",
            run=run.id,
            job=f"{run.project}/{run.job}",
            attempt=run.attempt,
            status=status,
            exit_code=exit_status.exit_code if exit_status else None,
            duration=round(time.monotonic() - t0, 3),
        )

    def _identity(self, run: Run, folder: Path) -> runas.Identity | None:
        """The user a run's process switches to (None: it runs as the node). Raises LookupError
        naming what this node cannot do (its user, group, or its policy). A per-run uid (D205)
        is taken from ``run_uids``: the caller gives it back when the process is gone."""
        if self.run_as is None:
            return None
        run_as = run.snapshot.run_as
        user, group = (run_as.user, run_as.group) if run_as is not None else (None, None)
        decision = decide(user, group, self.run_as)
        if decision.refusal is not None:
            raise LookupError(decision.refusal)
        if not decision.switch:
            return None
        if decision.dynamic:
            if self.run_uids is None:
                raise LookupError(f"{self.node_id} has no run_uid_range for per-run uids")
            return runas.dynamic_identity(self.run_uids.acquire(), str(folder))
        key = (decision.user, decision.group)
        now = time.monotonic()
        cached = self._identities.get(key)
        if cached is None or cached[1] < now:
            if len(self._identities) >= 256:
                self._identities.clear()
            cached = (runas.resolve(decision), now + IDENTITY_TTL)
            self._identities[key] = cached
        return cached[0]

    async def _cgroup(self, ex: Execution, writer: SpoolWriter) -> RunCgroup | None:
        """The attempt's cgroup, created with its limits (D150, D153). A limit this node cannot
        apply is said in the run's log and a metric, and the run goes on without it."""
        if self.containment is None:
            return None
        run = ex.run
        cg = self.containment.run_cgroup(run.id, run.attempt)
        res = run.snapshot.resources
        asked = res.asked() if res is not None else {}
        if cg is None:
            missing = sorted(asked)
        else:
            missing = await asyncio.get_running_loop().run_in_executor(
                cgroup_io(),
                functools.partial(
                    cg.create,
                    memory=res.memory if res else None,
                    cpu=res.cpu if res else None,
                    pids=res.pids if res else None,
                ),
            )
        if missing:
            for name in missing:
                metrics.LIMITS_NOT_APPLIED.labels(resource=name).inc()
            why = self.containment.layout.reason or "not supported here"
            writer.note(
                f"node {self.node_id} cannot apply the limits {', '.join(missing)} ({why}): "
                "the run goes on without them"
            )
            log.warning("resource limits not applied", run=run.id, missing=missing)
        return cg

    @staticmethod
    def _finish_cgroup(cg: RunCgroup) -> tuple[Usage, bool]:
        """In a cgroup-io thread: what the run used, then its cgroups removed."""
        usage = cg.usage()
        return usage, cg.remove(timeout=0.5)

    async def _secrets(self, run: Run) -> dict[str, bytes]:
        """The values of the secrets the run references, read now (at its start)."""
        refs = secret_refs(run.snapshot.env)
        if not refs:
            return {}
        if self.secrets is None:
            raise RuntimeError("this worker has no secret store")
        return await self.secrets.values(run.project, refs.values())

    async def _run_process(self, ex: Execution) -> tuple[str, str | None, ExitStatus | None, Any]:
        """Run the attempt in its own private folder (D143), removed afterwards."""
        run = ex.run
        folder = workdir.run_dir(self._work, run.id, run.attempt)
        try:
            return await self._run_in(ex, folder)
        finally:
            try:
                os.rmdir(folder)  # the usual case: the job left nothing
            except FileNotFoundError:
                pass
            except OSError:  # a tree: off the loop
                loop = asyncio.get_running_loop()
                loop.run_in_executor(None, workdir.remove_run_dir, folder)

    async def _run_in(
        self, ex: Execution, folder: Path
    ) -> tuple[str, str | None, ExitStatus | None, Any]:
        run = ex.run
        result_file = folder / workdir.RESULT_NAME
        writer = self.logs.open(LogRef(run.project, run.job, run.id, run.attempt))
        cg: RunCgroup | None = None
        masked: MaskedOutput | None = None
        secrets: dict[str, bytes] = {}
        run_uid: int | None = None  # a per-run uid (D205) to give back at the end
        tree_gone = True  # no process of the run is known to be left
        try:
            try:
                secrets = await self._secrets(run)
            except CronmeshError as exc:
                why = f"cannot read the run's secrets on node {self.node_id}: {exc.message}"
                writer.note(why)
                return "failed", why, None, None
            on_output = writer.write
            if secrets:  # every value is masked before anything reaches the spool (D148)
                masked = MaskedOutput(writer.write, secrets.values())
                on_output = masked.write
            argv, env = self._command(run, ex.claim_revision, result_file, secrets)
            prefix: list[str] | None = None
            try:
                identity = self._identity(run, folder)
                if identity is not None and identity.dynamic:
                    run_uid = identity.uid
                if identity is not None:
                    for name, value in identity.env().items():  # the job's own env: as given
                        if name not in run.snapshot.env:
                            env[name] = value
                    if self._setpriv is None:
                        self._setpriv = runas.setpriv()
                    prefix = runas.switch_prefix(identity, self._setpriv)
                workdir.make_run_dir(
                    folder,
                    identity.uid if identity else None,
                    identity.gid if identity else None,
                )
            except (LookupError, OSError) as exc:
                writer.note(f"cannot start the process: {exc}")
                return "failed", f"cannot start the process: {exc}", None, None
            # Claimed ahead (D120): spawn now, armed, and release it at the due instant, so the
            # instant costs one write per run instead of one spawn per run (D121).
            if run.not_before is not None and ex.requested is not None:
                return self._not_started(ex, writer)
            armed = run.not_before is not None and run.not_before > self.clock()
            spawn_t = time.perf_counter()
            try:
                cg = await self._cgroup(ex, writer)
                ex.proc = await Process.start(
                    argv,
                    env=env,
                    cwd=str(folder),
                    on_output=on_output,
                    armed=armed,
                    cgroup=cg,
                    prefix=prefix,
                    umask=workdir.job_umask(),
                )
            except OSError as exc:
                writer.note(f"cannot start the process: {exc}")
                return "failed", f"cannot start the process: {exc}", None, None
            metrics.SPAWN.observe(time.perf_counter() - spawn_t)
            if cg is None and self.containment is not None:
                self.containment.watch_session(ex.proc.pid)
            if armed:
                assert run.not_before is not None
                released = self._releases.add(run.not_before, ex.proc)
                woken: asyncio.Future[Any] = asyncio.ensure_future(ex.wake.wait())
                pending: set[asyncio.Future[Any]] = {released, woken}
                try:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                except BaseException:  # cancelled (lease lost): never release it
                    released.cancel()
                    raise
                finally:
                    woken.cancel()
                if not released.done():  # cancelled, or the node shuts down, before the tick
                    released.cancel()  # the batch skips it
                    ex.proc.disarm()  # it exits without running anything
                    await ex.proc.wait()
                    return self._not_started(ex, writer)
                started = released.result()
                if started is None:
                    writer.note("the armed process died before its start")
                    await ex.proc.wait()
                    return "failed", "the armed process died before its start", None, None
                run.started_at = started  # the record gets the real start
            elif run.not_before is not None:
                run.started_at = self.clock()
            if run.scheduled_at is not None and run.source == "schedule":
                metrics.START_LAG.observe(max(0.0, time.time() - run.scheduled_at.timestamp()))
            ex.act()  # a cancel that arrived before the process existed
            timeout = run.snapshot.timeout or None
            try:
                exit_status = await asyncio.wait_for(asyncio.shield(ex.proc.wait()), timeout)
            except TimeoutError:
                writer.note(f"timeout after {run.snapshot.timeout:g}s: stopping the process tree")
                ex.requested, ex.acted = "timeout", True
                await ex.proc.stop(run.snapshot.kill_grace)
                exit_status = await ex.proc.wait()
            if cg is not None:
                ex.usage, removed = await asyncio.get_running_loop().run_in_executor(
                    cgroup_io(), self._finish_cgroup, cg
                )
                if not removed:
                    log.warning("run cgroup not removed", run=run.id, cgroup=cg.name)
                    tree_gone = False
                cg = None
            status, error = self._outcome(ex, exit_status)
            if self._fenced(ex, exit_status):
                status = "lost"
                error = "killed by its node's fence: the lease was not renewed in time (D152)"
            if ex.acted or ex.reason or status == "lost":
                writer.note(f"run {status}: {error}")
        finally:
            if cg is not None:
                # Not removed above (a failure or a cancellation on the way): what is left is
                # killed, bounded; a cgroup that cannot go is reaped when the node starts again.
                if not cg.remove(timeout=0.5):
                    log.warning("run cgroup not removed", run=run.id, cgroup=cg.name)
                    tree_gone = False
            elif ex.proc is not None and self.containment is not None:
                self.containment.forget_session(ex.proc.pid)
            if masked is not None:
                masked.flush()
            writer.close()
            ex.output_bytes, ex.logged = writer.written, not writer.empty
            if run_uid is not None and self.run_uids is not None:
                # a uid whose processes may live on stays out until a scan finds it free
                over = tree_gone and (ex.proc is None or ex.proc.returncode_ready)
                self.run_uids.release(run_uid, over=over)
        result, result_error = self._read_result(result_file)
        if secrets:
            result = mask_result(result, list(secrets.values()))
        if result is not None and len(to_json(result)) > MAX_RESULT:
            # as stored, not as read: "1E15" is stored as 1000000000000000.0, a masked number
            # as a string; the run-history quota counts MAX_RESULT per record (D210)
            result, result_error = (
                None,
                f"result larger than {MAX_RESULT} bytes once stored; ignored",
            )
        if result_error and status == "succeeded":
            error = result_error
        return status, error, exit_status, result

    @staticmethod
    def _not_started(
        ex: Execution, writer: SpoolWriter
    ) -> tuple[str, str | None, ExitStatus | None, Any]:
        """A run claimed ahead and cancelled (or its node shut down) before its instant."""
        why = {"shutdown": "the node shut down"}.get(ex.requested or "", "")
        why = why or f"{ex.requested}ed by request"
        writer.note(f"{why} before it started")
        status = "lost" if ex.requested == "shutdown" else "cancelled"
        return status, f"{why} before it started", None, None

    def _fenced(self, ex: Execution, st: ExitStatus) -> bool:
        """SIGKILLed by nobody of ours while the lease deadline had passed: the fence did it."""
        if ex.acted or ex.reason is not None or st.signal != 9:
            return False
        return self.session.remaining() <= self.session.margin

    @staticmethod
    def _oom(ex: Execution) -> bool:
        return ex.usage is not None and ex.usage.oom_kills > 0

    @classmethod
    def _outcome(cls, ex: Execution, st: ExitStatus) -> tuple[str, str | None]:
        if not ex.acted:
            if not st.ok and cls._oom(ex):  # its own outcome: failed, reason oom_killed (D153)
                ex.reason = "oom_killed"
                res = ex.run.snapshot.resources
                limit = f" (memory limit {format_bytes(res.memory)})" if res and res.memory else ""
                return "failed", f"killed by the out-of-memory killer{limit}"
        elif ex.requested == "timeout":
            return "timed_out", f"timed out after {ex.run.snapshot.timeout:g}s"
        elif ex.requested in ("cancel", "abort"):
            return "cancelled", f"{ex.requested}ed by request"
        elif ex.requested == "shutdown":
            return "lost", "the node shut down before the run finished"
        if st.ok:
            return "succeeded", None
        if st.signal is not None:
            return "failed", f"killed by signal {st.signal}"
        return "failed", f"exit code {st.exit_code}"

    @staticmethod
    def _read_result(path: Path) -> tuple[Any, str | None]:
        data, error = workdir.read_result(path, MAX_RESULT)
        if data is None:
            return None, error
        try:
            return json.loads(data or b"null"), None
        except ValueError as exc:
            return None, f"result file unusable: {exc}"

    async def _complete(
        self, ex: Execution, status: str, st: ExitStatus | None, error: str | None, result: Any
    ) -> None:
        """One write that finishes the attempt, guarded by our claim; retried while we hold it."""
        run = ex.run
        _, ops = self.store.finish_ops(
            run,
            status=status,
            exit_code=st.exit_code if st else None,
            signal=st.signal if st else None,
            error=error,
            result=result,
            claim_revision=ex.claim_revision,
            slot=ex.slot,
            log=self.logs.url(LogRef(run.project, run.job, run.id, run.attempt))
            if ex.logged
            else None,
            output_bytes=ex.output_bytes,
            reason=ex.reason,
            peak_memory=ex.usage.peak_memory if ex.usage else None,
            cpu_seconds=round(ex.usage.cpu_seconds, 3)
            if ex.usage and ex.usage.cpu_seconds is not None
            else None,
        )
        claim = self.keys.claim(run.id)
        delay = 0.1
        while not self.session.lost.is_set():
            try:
                res = await self.batch.txn([Compare.created(claim, ex.claim_revision)], ops)
            except OutcomeUnknown as exc:
                metrics.OUTCOME_UNKNOWN.labels("completion").inc()
                log.warning("completion outcome unknown; reading back", error=str(exc))
                with contextlib.suppress(Unavailable):
                    if await self.etcd.get(claim) is None:
                        return  # applied (claim gone with our write) or lost: nothing more to do
                await asyncio.sleep(delay)
            except (Unavailable, LeaseGone) as exc:
                log.warning("completion write failed; retrying", error=str(exc))
                await asyncio.sleep(delay)
            except Rejected as exc:
                # Nothing applied. Giving up would leave our claim with no execution holding
                # it, and the orphan check would run the attempt again: keep trying instead.
                log.error("completion write refused; retrying", run=run.id, error=str(exc))
                await asyncio.sleep(max(delay, 1.0))
            else:
                if not res.succeeded:
                    metrics.COMPLETIONS_FENCED.inc()
                    log.warning(
                        "claim lost before completion; result discarded",
                        run=run.id,
                        attempt=run.attempt,
                        claim_revision=ex.claim_revision,
                    )
                    return
                metrics.run_finished(status, run.project, run.job)
                if ex.reason == "oom_killed":
                    metrics.OOM_KILLS.inc()
                return
            delay = min(delay * 2, 2.0)

    # -- stopping ------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop claiming, let running processes finish up to ``grace`` s, then stop them."""
        self.accepting = False
        loop = asyncio.get_running_loop()
        until = loop.time() + 10
        # Claims in flight become runs to drain (bounded, short: a claim is one transaction).
        while self.claiming and loop.time() < until:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        pending = [ex.done.wait() for ex in self.running.values()]
        if pending:
            log.info("draining", running=len(pending), grace=grace)
            _, still = await asyncio.wait(
                [asyncio.ensure_future(p) for p in pending], timeout=grace
            )
            for task in still:
                task.cancel()
        for ex in list(self.running.values()):
            ex.request("shutdown")
        waits = [ex.done.wait() for ex in self.running.values()]
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=30)

    async def close(self) -> None:
        """Kill whatever still runs (used when the lease is lost); writes nothing."""
        self.accepting = False
        for ex in self.running.values():
            if ex.proc is not None:
                ex.proc.kill()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._alarm.cancel()
