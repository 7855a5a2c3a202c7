"""The worker: claims queued runs with a lease-bound transaction, executes them, and finishes them
with a write that compares its claim (only the current claim may finish a run).

Three etcd writes per run: the leader's creation, the worker's claim, the worker's completion.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from cluster.budgets import Wait, retry_in
from cluster.etcd import (
    KV,
    Etcd,
)
from cluster.keys import Keys
from cluster.models import Run
from cluster.placement import Candidate, attempt_key, decide_claim, fits, preferred
from cluster.plan import slot_limit
from cluster.runas import NodeRunAs, decide
from cluster.runs import queued_run
from cluster.secret_store import SecretStore
from cluster.selector import matches, parse_selector
from cluster.session import Session
from cluster.store import Store
from cluster.txnbatch import TxnBatcher
from cluster.watch import by_key, follow
from logstore.service import Logs
from nodes import metrics
from nodes.executor import jobenv, runas, workdir
from nodes.executor.containment import Containment
from nodes.worker.attempt import CLAIM_AHEAD, MAX_ARMED, Alarm, Execution, Releases
from nodes.worker.budgets import BudgetGate
from nodes.worker.capacity import FDS_PER_RUN, Capacity, held_at_once, raise_fd_limit
from nodes.worker.claiming import Claiming
from nodes.worker.cluster_view import ClusterView
from nodes.worker.executing import Executing
from nodes.worker.holding import Holding
from nodes.worker.parking import ANY, Parking
from nodes.worker.queueorder import QueueOrder
from nodes.worker.seating import Seating

log = structlog.get_logger(__name__)

DRAIN_TELL_EVERY = 5.0  # s between two notices of what a draining node waits for


class Worker(Claiming, Executing, Holding):
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
        max_armed: int = MAX_ARMED,
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
        # What bounds the running processes (capacity, weight budget), and apart from it how
        # many runs may be held armed ahead of their instant (D260).
        self.max_armed = max_armed
        self._claiming_ahead: set[str] = set()  # queue keys of claims in flight ahead
        # queue keys of own claims in flight to be held (D456): ``max_armed`` bounds them apart
        self._claiming_held: set[str] = set()
        # Queue keys not parsed yet, and those whose run was due ahead when parsed: all that a
        # dispatch looks at while the runs to start now fill the capacity (a backlog of due runs
        # is not walked on every kick then, D260).
        self._fresh: set[str] = set()
        self._future: set[str] = set()
        held = held_at_once(capacity, max_armed)  # with those finishing (D467)
        soft, _ = raise_fd_limit(held)
        if soft < held * FDS_PER_RUN:
            log.warning("open-files limit low for capacity + max_armed", limit=soft)
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
        self._parked = Parking()  # entries not to look at again until the view moves (D358)
        self._order = QueueOrder()  # the queue's keys in claim order (D462)
        if view is not None:
            view.on_change = self.kick
        self.running: dict[str, Execution] = {}
        self.finishing: set[str] = set()  # run ids whose process ended, completion not written
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
        self._interrupted = asyncio.Event()  # a second Ctrl-C: stop the runs at once
        self._tasks: set[asyncio.Task[Any]] = set()
        self._alarm = Alarm(self.kick)
        self.budgets = BudgetGate(etcd, keys, self.kick)  # budgets' slots and windows (D275)
        seats = Capacity(capacity, weight_budget)
        self.seating = Seating(seats, Releases(clock), clock, self._ended, self._arm_room)
        self._work = Path(work_dir)
        self._work.mkdir(parents=True, exist_ok=True)
        left = workdir.clean_leftovers(self._work, spares=held)  # D464, D494
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
            tg.create_task(self.budgets.run())
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
        await follow(
            self.etcd,
            prefix,
            None,
            by_key(handle),
            what="worker watch",
            reread=True,
            reset=reset,
        )

    def _reset_queue(self) -> None:
        self.candidates.clear()
        self._seen.clear()
        self._best.clear()
        self._fresh.clear()
        self._future.clear()
        self._parked.clear()
        self._order.clear()

    def _on_queue(self, key: str, kv: KV | None) -> None:
        self._parked.drop(key)
        if kv is None:
            self.candidates.pop(key, None)
            self._parsed.pop(key, None)
            self._seen.pop(key, None)
            self._best.pop(key, None)
            self._fresh.discard(key)
            self._future.discard(key)
            self._order.remove(key)
        else:
            self.candidates[key] = kv
            self._fresh.add(key)
            self._order.add(key)
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
        self._fresh.discard(key)
        # this process's own leader encoded it just now: its run, not a second decoding (D352)
        run = queued_run(key.rsplit("/", 1)[-1], kv.value)
        try:
            run = run or Run.model_validate_json(kv.value)
        except ValueError as exc:
            log.error("unreadable queue entry", key=key, error=str(exc))
            return None
        self._parsed[key] = (kv.mod_revision, run)
        if run.not_before is not None and run.not_before > self.clock():
            self._future.add(key)
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
                self._parked.park(key, ANY)
                return None
        if self.view is None:
            if target.group is None and matches(parse_selector(target.selector), self.properties):
                return Candidate(self.node_id, 1), "preferred"
            self._parked.park(key, ANY)
            return None
        if user is not None and user not in self.view.project_users.get(run.project, ()):
            self._parked.park(key, self.view.version)
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
            # not a candidate (until the view moves), or another's for ``wait`` s more
            wait = math.inf if decision.wait is None else decision.wait
            self._parked.park(key, self.view.version, mono + wait)
            return None
        return decision.candidate, "preferred" if decision.preferred else "handoff"

    async def _dispatch_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            self.budgets.waiting.clear()
            self._dispatch()
            self.budgets.publish()

    def _dispatch(self) -> None:
        self.seating.arm_waiting()  # a claim ahead ended: its place to a held run first (D457)
        if not self.accepting or self.session.lost.is_set():
            return
        if (self.view is not None and not self.view.ready) or not self.budgets.ready:
            return  # kicked again when the view (and the budgets) have loaded
        now = self.clock()
        # the entries it may not take are parked: left out until the view moves or their
        # hand-off time comes (D358), when the alarm looks again
        version, mono = self.view.version if self.view is not None else ANY, time.monotonic()
        if self.busy() < self.capacity:
            looks = self._order.looks(self.candidates, self._parked.parked(version, mono))
            self._dispatch_pass(looks, now, ahead_only=False)
        if self.busy() >= self.capacity and self.armed() < self.max_armed:
            ahead = {k for k in (*self._fresh, *self._future) if k in self.candidates}
            self._dispatch_pass(self._parked.looks(ahead, version, mono), now, ahead_only=True)
        if (end := self._parked.next_end(mono)) is not None:
            self._kick_at(end)

    def _dispatch_pass(self, keys: Iterable[str], now: datetime, *, ahead_only: bool) -> None:
        """Claim what fits from ``keys`` in order. Over every queued run while the capacity has
        room (stopping when it is full), else over the runs that may be due ahead only."""
        for key in keys:
            now_full = self.busy() >= self.capacity
            if now_full and (not ahead_only or self.armed() >= self.max_armed):
                return
            if key in self.claiming:
                continue
            kv = self.candidates[key]
            run = self._run_of(key, kv)
            if run is None:
                continue
            ahead = False
            if run.not_before is not None:
                to_go = (run.not_before - now).total_seconds()
                if to_go - self.claim_ahead > 0:
                    self._kick_at(to_go - self.claim_ahead)
                    continue
                ahead = to_go > 0
                if ahead and self.budgets.counts_starts(run):
                    self._kick_at(to_go)  # claimed at its instant, never ahead (D468)
                    continue
            if not ahead:
                self._future.discard(key)  # due now: a backlog entry like any other
            if (self.armed() >= self.max_armed) if ahead else now_full:
                continue  # kicked again when a claim or a run ends
            limited = slot_limit(run.snapshot.overlap, run.snapshot.max_parallel) > 0
            if limited and (run.project, run.job) in self._claiming_jobs:
                # One claim at a time per limited job, the oldest first: two claims in flight
                # could both see the same slot free, and the later run could win it.
                continue
            choice = self._choose(key, run)
            if choice is None:
                continue
            chosen, via = choice
            if not ahead and not fits(
                running=self.busy(),
                # walks every execution: only when a weight budget can refuse the run (D461)
                used_weight=self.used_weight() if self.weight_budget is not None else 0,
                cost=chosen.weight,
                capacity=self.capacity,
                weight_budget=self.weight_budget,
            ):
                continue  # over the weight budget: a lighter run further down may still fit
            budget, docs_seen = self.budgets.look(run, now), self.budgets.docs_revision
            if isinstance(budget, Wait):  # held back: a freed slot (watch) or a timer wakes it
                if (delay := retry_in(budget, now)) is not None:
                    self._kick_at(delay + 0.01)
                continue
            self.claiming.add(key)
            if ahead:
                self._claiming_ahead.add(key)
            self._claiming_runs.add(run.id)
            if limited:
                self._claiming_jobs.add((run.project, run.job))
            self._claim_cost[key] = chosen.weight
            guards = self._grant_guards(run, chosen)
            if budget is not None:
                self.budgets.begin(budget)
            seen = self.view.own_state()[1] if self.view is not None else None  # D470
            claim = self._claim(key, kv, run, chosen.weight, via, guards, budget, docs_seen, seen)
            self._spawn(claim)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker task failed", error=repr(task.exception()))

    # -- stopping ------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop claiming, let running processes finish up to ``grace`` s, then stop them. Says
        what it waits for (how many runs, their jobs, the time left) when it starts, every
        ``DRAIN_TELL_EVERY`` s and when the count changes. :meth:`interrupt` (a second Ctrl-C)
        ends the wait and stops the runs at once (D245)."""
        self.accepting = False
        loop = asyncio.get_running_loop()
        until = loop.time() + 10
        # Claims in flight become runs to drain (bounded, short: a claim is one transaction).
        while self.claiming and loop.time() < until:
            if self._interrupted.is_set():
                break
            await asyncio.sleep(0.01)
        deadline = loop.time() + grace
        had = len(self.running)
        told: tuple[int, float] | None = None  # (runs, when) of the last notice
        while self.running and not self._interrupted.is_set():
            now = loop.time()
            if now >= deadline:
                break
            if told is None or told[0] != len(self.running) or now - told[1] >= DRAIN_TELL_EVERY:
                told = (len(self.running), now)
                log.info(
                    "draining",
                    running=len(self.running),
                    jobs=self.running_jobs(),
                    left=round(deadline - now),
                    hint="a second Ctrl-C (SIGINT or SIGTERM) stops them at once (cancelled)",
                )
            await self._wait_runs(min(deadline, told[1] + DRAIN_TELL_EVERY) - now)
        for ex in list(self.running.values()):
            ex.request("interrupt" if self._interrupted.is_set() else "shutdown")
        until = loop.time() + 30
        interrupted = self._interrupted.is_set()
        while self.running and loop.time() < until:
            # a second Ctrl-C while the processes get their kill_grace: stop them at once
            if self._interrupted.is_set() and not interrupted:
                interrupted = True
                for ex in list(self.running.values()):
                    ex.request("interrupt")
            await self._wait_runs(until - loop.time(), interruptible=not interrupted)
        if had and not self.running and not interrupted:
            log.info("drained")

    def running_jobs(self, limit: int = 10) -> list[str]:
        """The jobs of the running runs (``project/job``, ``project/job xN`` for N runs), the
        most frequent first."""
        counts = Counter(f"{ex.run.project}/{ex.run.job}" for ex in self.running.values())
        out = [f"{name} x{n}" if n > 1 else name for name, n in counts.most_common(limit)]
        if len(counts) > limit:
            out.append(f"... and {len(counts) - limit} more jobs")
        return out

    async def _wait_runs(self, within: float, *, interruptible: bool = True) -> None:
        """Until a running execution ends, :meth:`interrupt` is called (``interruptible``), or
        ``within`` s."""
        waits = [asyncio.ensure_future(ex.done.wait()) for ex in self.running.values()]
        if interruptible:
            waits.append(asyncio.ensure_future(self._interrupted.wait()))
        try:
            await asyncio.wait(waits, timeout=max(0.0, within), return_when="FIRST_COMPLETED")
        finally:
            for w in waits:
                w.cancel()

    def interrupt(self) -> None:
        """Stop every running process at once (SIGKILL to its tree); each run is recorded
        ``cancelled`` with reason ``interrupted``, not ``lost`` (the node knows it stopped them,
        D245). Used on a second Ctrl-C while the node drains."""
        self.accepting = False
        if not self._interrupted.is_set():
            log.warning(
                "interrupted: stopping the runs at once",
                running=len(self.running),
                jobs=self.running_jobs(),
                node=self.node_id,  # called from the signal handler: no bound context there
            )
        self._interrupted.set()
        for ex in list(self.running.values()):
            ex.request("interrupt")

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
