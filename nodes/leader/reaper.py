"""Lost runs: a claim that vanished with its worker's lease while the run still says ``running``.

The leader watches ``claims/`` for deletions and looks a moment later whether the run is still
active (its completion deletes the claim and the active key in one write, which arrive on two
watches); it also reconciles every 10 s (active runs that are neither queued nor claimed, read at
one revision). A lost run is finished as ``lost`` by a transaction that compares the leader's
fence, the claim's absence and the run record's mod revision; the retry policy applies as for a
failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from cluster.election import Leadership
from cluster.errors import Unavailable
from cluster.etcd import Compare, Etcd, OutcomeUnknown
from cluster.keys import Keys
from cluster.store import Store
from nodes import metrics

log = structlog.get_logger(__name__)

LOST_CHECK_DELAY = 0.5  # s after a claim's deletion before a still-active run is read back
LOST_CHECK_MAX = 2.0  # ... or at most this long when the active keys' watch has not caught up
# ... unless that watch is moving (only behind: a loaded leader), then up to this long (D473); a
# run lost meanwhile is found by the reconcile, every 10 s, in any case
LOST_CHECK_BEHIND = 10.0

JobKey = tuple[str, str]


def look_again(rev: int, gone_at: int, waited: float, seen: int) -> bool:
    """Whether a lost-run check waits ``LOST_CHECK_DELAY`` more for the active keys' watch to
    pass the claim's deletion (revision ``gone_at``), after ``waited`` s, the watch at ``rev`` now
    and at ``seen`` one step before: up to ``LOST_CHECK_MAX`` in any case (a watch that sees
    nothing never passes it), and while the watch moves up to ``LOST_CHECK_BEHIND`` (D473). A
    loaded leader's watch lagged more than 2 s behind its claims' and nearly every completion was
    read back (an etcd range and a decoded record each) — more work for the loop that lagged."""
    if rev >= gone_at:
        return False
    return waited < LOST_CHECK_MAX or (rev > seen and waited < LOST_CHECK_BEHIND)


class Reaper:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        store: Store,
        leadership: Leadership,
        *,
        active_job: dict[str, JobKey],
        actives_rev: Callable[[], int],
    ) -> None:
        """``active_job``: the leader's cache of active runs (run id → job), kept by its watch;
        ``actives_rev``: the revision of the newest event that watch has seen."""
        self.etcd = etcd
        self.keys = keys
        self.store = store
        self.lead = leadership
        self._active_job = active_job
        self._actives_rev = actives_rev
        self._lost_checks: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def on_claim_event(self, ev: Any) -> None:
        if ev.kind != "delete":
            return
        run_id = ev.kv.key.rsplit("/", 1)[-1]
        if run_id in self._active_job and run_id not in self._lost_checks:
            # A finished run's completion deletes its claim and its active key in one write, but
            # the two arrive on separate watches: look a moment later, and read the run back only
            # if it is still active once the active keys' watch has passed the claim's deletion
            # (a retry queued, or a worker gone). Reading every one back was a sixteenth of the
            # leader's CPU per run and an etcd range per run (D136).
            self._lost_checks.add(run_id)
            self._later(run_id, ev.kv.mod_revision, LOST_CHECK_DELAY, self._actives_rev())

    def _later(self, run_id: str, gone_at: int, waited: float, seen: int) -> None:
        asyncio.get_running_loop().call_later(
            LOST_CHECK_DELAY, self._after_claim_gone, run_id, gone_at, waited, seen
        )

    def _after_claim_gone(self, run_id: str, gone_at: int, waited: float, seen: int) -> None:
        jk = self._active_job.get(run_id)
        if jk is None:
            self._lost_checks.discard(run_id)  # finished: its active key went with the claim
            return
        rev = self._actives_rev()
        if look_again(rev, gone_at, waited, seen):  # that watch is behind
            self._later(run_id, gone_at, waited + LOST_CHECK_DELAY, rev)
            return
        task = asyncio.get_running_loop().create_task(self._check_lost_task(run_id, jk[0]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check_lost_task(self, run_id: str, project: str) -> None:
        try:
            await self.check_lost(run_id, project)
        except (Unavailable, OutcomeUnknown) as exc:
            if isinstance(exc, OutcomeUnknown):
                metrics.OUTCOME_UNKNOWN.labels("lost_run").inc()
            log.warning("lost-run check failed; reconcile will retry", run=run_id, error=str(exc))
        finally:
            self._lost_checks.discard(run_id)

    async def check_lost(self, run_id: str, project: str) -> None:
        try:
            stored = await self.store.get_run_kv(project, run_id)
        except LookupError:
            return
        run = stored.run
        jk = (project, run.job)
        if run.status != "running":
            return
        claim = self.keys.claim(run_id)
        if await self.etcd.get(claim) is not None:
            return
        # A running record was last written by its claim: that write's revision is the
        # attempt's fencing token, which the lost attempt records like a finished one. (The
        # record's own ``claim_revision`` is the previous attempt's on a retry: not this one.)
        earlier = {a.claim_revision for a in run.attempts}
        token = run.claim_revision if run.claim_revision not in earlier else None
        updated, ops = self.store.finish_ops(
            run,
            status="lost",
            error=f"node {run.node} stopped holding the run (lease expired)",
            claim_revision=token or stored.mod_revision,
        )
        res = await self.etcd.txn(
            [
                self.lead.fence(),
                Compare.absent(claim),
                Compare.modified(self.keys.run(jk[0], run_id), stored.mod_revision),
            ],
            ops,
        )
        if res.succeeded:
            metrics.run_finished("lost", project, run.job)
            log.warning(
                "run lost",
                job="/".join(jk),
                run=run_id,
                node=run.node,
                attempt=run.attempt,
                retry=updated.status == "pending",
            )

    async def reconcile(self) -> None:
        """Find active runs that are neither queued nor claimed (their worker died)."""
        actives = await self.etcd.range_all(self.keys.actives(), keys_only=True)
        rev = actives.revision
        queued = await self.etcd.range_all(self.keys.queue(), keys_only=True, revision=rev)
        claimed = await self.etcd.range_all(self.keys.claims(), keys_only=True, revision=rev)
        held = {kv.key.rsplit("/", 1)[-1] for kv in queued.kvs + claimed.kvs}
        for kv in actives.kvs:
            # The watch owns the in-memory active set; this only looks for orphans.
            project, _, run_id = self.keys.tail(kv.key, self.keys.actives())[:3]
            if run_id not in held and run_id not in self._lost_checks:
                self._lost_checks.add(run_id)
                await self._check_lost_task(run_id, project)
