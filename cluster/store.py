"""Typed access to what cronmesh keeps in etcd: jobs, runs, queue, claims, ticks.

The functions that *build* operations (``create_run_ops``, ``finish_ops``: :mod:`cluster.runs`)
are shared by the API, the scheduler and the worker, so every path that changes a run keeps the
same invariants:

- a run is *active* (``active/…`` key present) from creation until it is finished;
- a pending run has exactly one queue entry, and a pending run's record only changes together with
  its queue entry (so claiming, cancelling and retrying can compare that one key);
- a running run has exactly one claim key, bound to the worker's lease; only a write that compares
  that claim's create revision may finish the run.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cluster.errors import Conflict, InvalidInput, RunNotFound, Unavailable
from cluster.etcd import KV, Compare, Etcd, Op, prefix_end
from cluster.ids import Snowflake, is_id
from cluster.job_store import JobStore
from cluster.keys import Keys
from cluster.models import Run
from cluster.quotas import Quotas
from cluster.runs import RETRYABLE, RunOps, dumps, tick_record
from cluster.txnfit import MAX_TXN_OPS

__all__ = [
    "MAX_BACKFILL",
    "MAX_TXN_OPS",
    "RETRYABLE",
    "RUNS_PAGE_BYTES",
    "RUNS_PER_READ",
    "RUNS_SCAN_BYTES",
    "Store",
    "Stored",
    "dumps",
    "tick_record",
]

# Listing runs (a viewer's request): keys per etcd read, bytes of run records per answer and per
# scan; beyond them the page ends early with a cursor (review-sec; a run is up to ~0.5 MiB).
RUNS_PER_READ = 100
RUNS_PAGE_BYTES = 16 * 1024 * 1024
RUNS_SCAN_BYTES = 128 * 1024 * 1024
MAX_BACKFILL = 1000


@dataclass(frozen=True, slots=True)
class Stored:
    """A decoded value with the revisions needed to compare-and-swap it."""

    run: Run
    mod_revision: int


class Store(RunOps, JobStore):
    """Jobs and runs in etcd: reads, and the writes of the API (jobs: ``JobStore``, quotas:
    ``QuotaStore``, run operations: ``RunOps``)."""

    def __init__(
        self, etcd: Etcd, keys: Keys, ids: Snowflake, clock: Callable[[], datetime]
    ) -> None:
        super().__init__(keys, ids, clock)
        self.etcd = etcd
        self.quotas = Quotas()  # the cluster-wide defaults (the node sets its config's)

    # -- runs: reading -------------------------------------------------------------------------

    async def get_run_kv(self, project: str, run_id: str) -> Stored:
        if not is_id(run_id):
            raise RunNotFound(f"run {run_id!r} not found", field="run_id")
        kv = await self.etcd.get(self.keys.run(project, run_id))
        if kv is None:
            raise RunNotFound(f"run {run_id!r} not found in project {project!r}", field="run_id")
        return Stored(Run.model_validate_json(kv.value), kv.mod_revision)

    async def get_run(self, project: str, run_id: str) -> Run:
        return (await self.get_run_kv(project, run_id)).run

    async def get_many(self, keys: Sequence[str]) -> list[KV]:
        """Read many single keys in a few round trips (one transaction per batch)."""
        out: list[KV] = []
        for i in range(0, len(keys), MAX_TXN_OPS):
            chunk = keys[i : i + MAX_TXN_OPS]
            res = await self.etcd.txn([], [Op.get(k) for k in chunk])
            for j in range(len(chunk)):
                out.extend(res.range_kvs(j))
        return out

    async def list_runs(
        self,
        project: str,
        *,
        job: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Run]:
        """Runs newest first; ``before`` pages (a run id: answers older runs only)."""
        runs, _ = await self.page_runs(project, job=job, status=status, limit=limit, before=before)
        return runs

    async def page_runs(
        self,
        project: str,
        *,
        job: str | None = None,
        status: str | None = None,
        contains: str | None = None,
        since: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> tuple[list[Run], str | None]:
        """Runs newest first, and the ``before`` of the next page (None: there is none).

        ``contains``: a part of the job name (any case); ``since``/``before``: run ids, so a time
        range is a key range (ids are time-ordered). The scan is bounded: when it stops before
        ``limit`` matches, the cursor says where to go on."""
        runs: list[Run] = []
        base = self.keys.job_runs(project, job) if job else self.keys.runs(project)
        lo = base + since if since else base
        hi = base + before if before else prefix_end(base).decode()
        needle = contains.lower() if contains else None
        scanned = scanned_bytes = kept_bytes = 0
        budget = 20 * limit + 1000
        while True:
            if scanned >= budget or scanned_bytes >= RUNS_SCAN_BYTES:
                return runs, hi.rsplit("/", 1)[-1]  # unscanned older runs remain
            # a run record carries its job's document (up to 256 KiB, more with parameters):
            # a few dozen per etcd read, so neither etcd nor this node builds a huge answer
            page = min(max(limit * (4 if status or needle else 1), 20), RUNS_PER_READ)
            res = await self.etcd.range(
                lo, end=hi, limit=min(page, budget - scanned), descending=True, keys_only=bool(job)
            )
            if not res.kvs:
                return runs, None
            scanned += len(res.kvs)
            if job:
                ids = [kv.key.rsplit("/", 1)[-1] for kv in res.kvs]
                kvs = await self.get_many([self.keys.run(project, i) for i in ids])
            else:
                kvs = res.kvs
            sizes = {kv.key.rsplit("/", 1)[-1]: len(kv.value) for kv in kvs}
            scanned_bytes += sum(sizes.values())
            batch = sorted(
                (Run.model_validate_json(kv.value) for kv in kvs),
                key=lambda r: r.id,
                reverse=True,
            )
            for r in batch:
                if status is not None and r.status != status:
                    continue
                if needle is not None and needle not in r.job.lower():
                    continue
                runs.append(r)
                kept_bytes += sizes.get(r.id, 0)
                if len(runs) == limit or kept_bytes >= RUNS_PAGE_BYTES:
                    more = res.more or r.id != batch[-1].id
                    return runs, r.id if more else None
            if not res.more:
                return runs, None
            hi = res.kvs[-1].key

    # -- runs: changing ------------------------------------------------------------------------

    async def cancel_pending_of(self, project: str, job: str) -> int:
        """Cancel the runs of a (deleted) job that have not started: they stay in the history,
        ``cancelled``; running ones end on their own. Answers how many were cancelled."""
        actives = await self.etcd.range_all(self.keys.actives(project, job), keys_only=True)
        done = 0
        for kv in actives.kvs:
            try:
                stored = await self.get_run_kv(project, kv.key.rsplit("/", 1)[-1])
            except RunNotFound:
                continue
            if stored.run.status == "pending":
                done += await self.cancel_pending(stored, "its job was deleted") is not None
        return done

    async def trigger(self, project: str, name: str, parameters: dict[str, str]) -> Run:
        job, rev = await self.get_job_kv(project, name)
        run = self.new_run(job, source="manual", parameters=parameters)
        await self.check_history(project, self.charge_of(run))
        res = await self.etcd.txn(
            [
                Compare.modified(self.keys.job(project, name), rev),
                Compare.absent(self.keys.run(project, run.id)),
            ],
            self.create_run_ops(run),
        )
        if not res.succeeded:
            raise Conflict(f"job {name!r} changed while triggering; retry", field="name")
        return run

    async def cancel_run(self, project: str, run_id: str, action: str = "cancel") -> Run:
        """Cancel (SIGTERM, grace, SIGKILL) or abort (SIGKILL) a run, pending or running."""
        for _ in range(10):
            stored = await self.get_run_kv(project, run_id)
            run = stored.run
            if run.finished:
                raise Conflict(f"run {run_id} already finished ({run.status})", field="run_id")
            if run.status == "pending":
                done = await self.cancel_pending(stored, f"{action}led before it started")
                if done is not None:
                    return done
                continue
            claim = self.keys.claim(run_id)
            res = await self.etcd.txn(
                [
                    Compare.exists(claim),
                    Compare.modified(self.keys.run(project, run_id), stored.mod_revision),
                ],
                [Op.put(self.keys.control(run_id), dumps({"action": action, "at": self.clock()}))],
            )
            if res.succeeded:
                return run
        raise Conflict(f"run {run_id} keeps changing; retry", field="run_id")

    async def cancel_pending(self, stored: Stored, why: str) -> Run | None:
        """Finish a pending run as cancelled, if it is still pending; None when it moved on."""
        run = stored.run
        queue = self.queue_key(run)
        updated = run.model_copy(deep=True)
        updated.status = "cancelled"
        updated.finished_at = self.clock()
        updated.error = why
        doc = updated.model_dump_json()
        res = await self.etcd.txn(
            [
                Compare.exists(queue),
                Compare.modified(self.keys.run(run.project, run.id), stored.mod_revision),
            ],
            [
                Op.delete(queue),
                Op.delete(self.keys.control(run.id)),
                Op.delete(self.keys.active(run.project, run.job, run.id)),
                Op.put(self.keys.run(run.project, run.id), doc),
                Op.put(self.keys.job_run(run.project, run.job, run.id), "cancelled"),
                self.charge_op(updated, doc),
            ],
        )
        return updated if res.succeeded else None

    # -- ticks ---------------------------------------------------------------------------------

    async def tick_records(self, project: str, name: str, limit: int) -> list[dict[str, Any]]:
        res = await self.etcd.range(self.keys.ticks(project, name), limit=limit, descending=True)
        return [json.loads(kv.value) for kv in res.kvs]

    async def schedule_state(self, project: str, name: str) -> dict[str, Any]:
        kv = await self.etcd.get(self.keys.schedule_state(project, name))
        return json.loads(kv.value) if kv else {}

    async def backfill(
        self,
        project: str,
        name: str,
        start: datetime,
        end: datetime,
        *,
        admit: Callable[[int], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """One run per tick in ``[start, end]``; a tick that already has a run is left alone.
        ``admit(n)`` may refuse the ``n`` runs (caps, D173) before anything is written."""
        from cluster.cron import ticks_between

        job, _ = await self.get_job_kv(project, name)
        if end > self.clock():
            raise InvalidInput(
                "'to' is in the future; backfill only covers ticks that are already due",
                field="to",
            )
        wanted: list[tuple[datetime, str, dict[str, str]]] = []
        for spec in job.schedules:
            if not spec.enabled:
                continue
            sched = spec.parse(f"{project}/{name}")
            fp = spec.fingerprint()
            for tick in ticks_between(
                sched, start - timedelta(microseconds=1), end, MAX_BACKFILL + 1
            ):
                wanted.append((tick, fp, spec.parameters))
        if len(wanted) > MAX_BACKFILL:
            raise InvalidInput(
                f"the range holds more than {MAX_BACKFILL} ticks; backfill a shorter range",
                field="to",
            )
        if admit is not None and wanted:
            await admit(len(wanted))
        if wanted:  # each run is charged about what the first is (D318)
            sample = self.new_run(job, source="backfill", parameters=wanted[0][2])
            await self.check_history(project, len(wanted) * self.charge_of(sample))
        created: list[str] = []
        existing = 0
        per_txn = 16
        for i in range(0, len(wanted), per_txn):
            chunk = wanted[i : i + per_txn]
            for _ in range(5):
                tick_keys = [
                    self.keys.tick(project, name, fp, int(t.timestamp() * 1000))
                    for t, fp, _ in chunk
                ]
                have = {kv.key for kv in await self.get_many(tick_keys)}
                todo = [(c, k) for c, k in zip(chunk, tick_keys, strict=True) if k not in have]
                ops: list[Any] = []
                runs = []
                for (tick, fp, params), key in todo:
                    run = self.new_run(
                        job, source="backfill", parameters=params, scheduled_at=tick, schedule=fp
                    )
                    runs.append(run)
                    ops += self.create_run_ops(run)
                    ops.append(Op.put(key, tick_record(tick, fp, "backfill", run.id)))
                if not todo:
                    existing += len(chunk)
                    break
                res = await self.etcd.txn([Compare.absent(k) for _, k in todo], ops)
                if res.succeeded:
                    created += [r.id for r in runs]
                    existing += len(chunk) - len(todo)
                    break
            else:
                raise Unavailable("backfill kept conflicting with the scheduler; retry")
        return {"created": created, "existing": existing, "ticks": len(wanted)}
