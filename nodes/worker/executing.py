"""The worker's execution of a claimed run: its user, cgroup and secrets (its command and
environment: ``nodes.worker.jobcommand``), the process with its armed release and timeout, the
outcome and the result file, and the claim-guarded completion (with retries)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import structlog
from pydantic_core import to_json

from cluster.errors import CronmeshError, Unavailable
from cluster.etcd import (
    Compare,
    LeaseGone,
    OutcomeUnknown,
    Rejected,
)
from cluster.masking import MaskedOutput, mask_result
from cluster.models import Run, secret_refs
from cluster.runas import decide
from cluster.runs import TICK_SOURCES
from cluster.waiting import within
from logstore.spool import LogRef, SpoolWriter
from nodes import metrics
from nodes.executor import launch, runas, workdir
from nodes.executor.cgroups import RunCgroup
from nodes.executor.process import ExitStatus, Process
from nodes.worker.attempt import (
    COMPLETION_LINGER,
    EXECUTED_KEPT,
    IDENTITY_TTL,
    MAX_RESULT,
    Execution,
)
from nodes.worker.jobcommand import JobCommand
from nodes.worker.outcome import Outcomes

log = structlog.get_logger(__name__)

Read = tuple[bytes | None, str | None] | None  # a result file as read (workdir.read_result)


class Executing(JobCommand, Outcomes):
    """The executing part of :class:`~nodes.worker.worker.Worker` (its state is the worker's)."""

    finishing: set[str]  # the worker's: ended, their completion not written yet (D467)

    # -- executing -----------------------------------------------------------------------------

    def _start(
        self, run: Run, claim_rev: int, slot: str | None, cost: int = 1, held: bool = False
    ) -> None:
        """Register the execution at once (so control requests find it), then run it. ``held``:
        an own claim made before its arming, counted held (no process) until then (D456)."""
        if self.session.lost.is_set():
            return  # the claim vanished with the lease; the leader will reap and retry it
        ex = Execution(run, claim_rev, slot, cost=cost)
        self.running[run.id] = ex
        if held and run.not_before is not None:
            self.seating.held.add(run.id)
        elif run.not_before is not None:  # claimed ahead (even if its instant passed during the
            self.seating.ahead.add(run.id)  # claim): counted as armed until it has a seat (D390)
        metrics.RUNNING.set(len(self.running))
        if run.id in self._controls:
            ex.request(self._controls[run.id])
        if self._interrupted.is_set():  # claimed after a second Ctrl-C: never started (D280)
            ex.request("interrupt")
        self._spawn(self._execute(ex))

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
                    await within(asyncio.shield(ex.proc.wait()), 5)
            self.running.pop(run.id, None)
            self.finishing.discard(run.id)
            ex.done.set()
            raise
        except Exception as exc:
            # A local failure (disk full, unreadable files): the run fails, it never leaks.
            log.exception("run failed on this node", run=run.id)
            if ex.proc is not None:
                ex.proc.kill()
                with contextlib.suppress(Exception):
                    await within(asyncio.shield(ex.proc.wait()), 5)
            status, error = "failed", f"node {self.node_id} could not run it: {exc!r}"
        finally:
            structlog.contextvars.unbind_contextvars("run", "job")
        try:
            ex.phase = "completing"  # in ``finishing`` since _run_process's seating.done (D460)
            await self._complete(ex, status, exit_status, error, result)
        finally:
            self._executed[run.id] = run.attempt
            if len(self._executed) > EXECUTED_KEPT:
                self._executed.pop(next(iter(self._executed)))
            self.running.pop(run.id, None)
            self.finishing.discard(run.id)
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

    async def _launch(
        self,
        ex: Execution,
        writer: SpoolWriter,
        folder: Path,
        who: runas.Identity | None,
        command: tuple[list[str], dict[str, str], list[str] | None],
        on_output: Any,
        armed: bool,
    ) -> tuple[Process, RunCgroup | None]:
        """The attempt's private folder (D143), its cgroup from the node's pool with its limits
        (D150, D153, D340) and its process, held and moved in: one cgroup-io hand-off (D341);
        without cgroups the folder's one mkdir stays on the loop. A limit this node cannot apply
        is said in the run's log and a metric, and the run goes on without it. Raises OSError
        when any cannot be made (the process never started)."""
        res = ex.run.snapshot.resources
        argv, env, prefix = command
        uid, gid = (who.uid, who.gid) if who is not None else (None, None)
        pool = self.containment.pool if self.containment is not None else None
        cg: RunCgroup | None = None
        if pool is None:
            workdir.make_run_dir(folder, uid, gid)  # one mkdir: not worth a hand-off
            asked = res.asked() if res is not None and self.containment is not None else {}
            missing = sorted(asked)
            proc = await Process.start(
                argv,
                env=env,
                cwd=str(folder),
                on_output=on_output,
                armed=armed,
                prefix=prefix,
                umask=workdir.job_umask(),
            )
        else:
            limits = {k: getattr(res, k) if res else None for k in ("memory", "cpu", "pids")}
            proc, cg, missing = await launch.start(
                argv,
                env=env,
                folder=folder,
                uid=uid,
                gid=gid,
                pool=pool,
                limits=limits,
                on_output=on_output,
                armed=armed,
                prefix=prefix,
                umask=workdir.job_umask(),
            )
        if missing:
            assert self.containment is not None
            for name in missing:
                metrics.LIMITS_NOT_APPLIED.labels(resource=name).inc()
            why = self.containment.layout.reason or "not supported here"
            writer.note(
                f"node {self.node_id} cannot apply the limits {', '.join(missing)} ({why}): "
                "the run goes on without them"
            )
            log.warning("resource limits not applied", run=ex.run.id, missing=missing)
        return proc, cg

    def _spawn_first(self, ex: Execution) -> bool:
        """Whether a run due now is spawned held before it takes its seat, and released once
        seated (D471): when its spawn is a hand-off to the ``cgroup-io`` threads, whose line
        (armed spawns, clean-ups) a saturated node's due runs waited in holding their seats —
        seats then turned over at the line's pace, not the runs'. Not for a held own claim past
        its instant (D457): ``max_armed`` bounds those apart and they have no process until
        seated, so a node's processes stay within ``capacity`` + ``max_armed``."""
        pooled = self.containment is not None and self.containment.pool is not None
        return pooled and ex.run.id not in self.seating.held

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
            self.seating.done(ex)  # its seat to the next in line (D260)
            try:
                if not ex.folder_gone:  # gone with its cgroup already (D310)
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
        read: Read = None  # the result file, when the cgroup's clean-up read it already
        try:
            if not await self.seating.hold(ex, self.claim_ahead):  # a held own claim (D456)
                return self._not_started(ex, writer)  # no process, secrets or env before then
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
            except (LookupError, OSError) as exc:
                writer.note(f"cannot start the process: {exc}")
                return "failed", f"cannot start the process: {exc}", None, None
            # Claimed ahead (D120): spawn now, armed, and release it at the due instant, so the
            # instant costs one write per run instead of one spawn per run (D121). A node that
            # stops before the process exists hands the run on unstarted (D280).
            if ex.requested in ("shutdown", "interrupt") or (ex.requested and run.not_before):
                return self._not_started(ex, writer)
            armed = run.not_before is not None and run.not_before > self.clock()
            # due now and spawned by the cgroup-io threads: spawned held, seated after (D471)
            early = not armed and self._spawn_first(ex)
            ex.phase = "armed" if armed else "seat"
            if not armed and not early and not await self.seating.take(ex):
                return self._not_started(ex, writer)  # cancelled while waiting for a seat
            spawn_t, ex.phase = time.perf_counter(), "spawning"
            try:
                command = (argv, env, prefix)  # with its folder and cgroup (D341)
                ex.proc, cg = await self._launch(
                    ex, writer, folder, identity, command, on_output, armed or early
                )
            except OSError as exc:
                writer.note(f"cannot start the process: {exc}")
                return "failed", f"cannot start the process: {exc}", None, None
            metrics.SPAWN.observe(time.perf_counter() - spawn_t)
            ex.phase = "armed" if armed else "seat" if early else "running"
            # its seat goes to the next in line as soon as the process exits (D260)
            ex.proc.on_exit(functools.partial(self.seating.done, ex))
            if cg is None and self.containment is not None:
                self.containment.watch_session(ex.proc.pid)
            if armed:
                assert run.not_before is not None
                started = await self.seating.released(ex, ex.proc, run.not_before)
                if started is False:  # cancelled, or the node shuts down, before it started
                    ex.proc.disarm()  # it exits without running anything
                    await ex.proc.wait()
                    return self._not_started(ex, writer)
                if started is None:
                    writer.note("the armed process died before its start")
                    await ex.proc.wait()
                    return "failed", "the armed process died before its start", None, None
                run.started_at, ex.phase = started, "running"  # the record gets the real start
            elif early:
                if not await self.seating.take(ex):  # cancelled while waiting for a seat
                    ex.proc.disarm()  # it exits without running anything
                    await ex.proc.wait()
                    return self._not_started(ex, writer)
                if not ex.proc.release():
                    writer.note("the process died before its start")
                    await ex.proc.wait()
                    return "failed", "the process died before its start", None, None
                ex.phase = "running"
            if not armed and run.not_before is not None:
                run.started_at = self.clock()
            if run.scheduled_at is not None and run.source in TICK_SOURCES:  # late ones too
                metrics.START_LAG.observe(max(0.0, time.time() - run.scheduled_at.timestamp()))
            ex.act()  # a cancel that arrived before the process existed
            timeout = run.snapshot.timeout or None
            try:
                exit_status = await within(asyncio.shield(ex.proc.wait()), timeout)
            except TimeoutError:
                writer.note(f"timeout after {run.snapshot.timeout:g}s: stopping the process tree")
                ex.requested, ex.acted = "timeout", True
                await ex.proc.stop(run.snapshot.kill_grace)
                exit_status = await ex.proc.wait()
            ex.phase = "cleanup"
            if cg is not None:
                assert self.containment is not None and self.containment.pool is not None
                # from here the clean-up thread owns the cgroup, cancelled or not: it may go
                # back to the pool, and nothing below may kill what a next run puts in it
                name, cg = cg.name, None
                done = await launch.finish(self.containment.pool, ex.proc, folder, MAX_RESULT)
                ex.usage, removed, read, ex.folder_gone = done
                if not removed:
                    log.warning("run cgroup not removed", run=run.id, cgroup=name)
                    tree_gone = False
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
            ex.log_url = self.logs.placed(writer)  # in a pack (D440), else None: its own object
            if run_uid is not None and self.run_uids is not None:
                # a uid whose processes may live on stays out until a scan finds it free
                over = tree_gone and (ex.proc is None or ex.proc.returncode_ready)
                self.run_uids.release(run_uid, over=over)
        result, result_error = self._read_result(result_file, read)
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

    def _fenced(self, ex: Execution, st: ExitStatus) -> bool:
        """SIGKILLed by nobody of ours while the lease deadline had passed: the fence did it."""
        if ex.acted or ex.reason is not None or st.signal != 9:
            return False
        return self.session.remaining() <= self.session.margin

    @staticmethod
    def _read_result(path: Path, read: Read = None) -> tuple[Any, str | None]:
        data, error = read if read is not None else workdir.read_result(path, MAX_RESULT)
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
            slot=ex.slots,
            log=ex.log_url or self.logs.url(LogRef(run.project, run.job, run.id, run.attempt))
            if ex.logged
            else None,
            output_bytes=ex.output_bytes,
            reason=ex.reason,
            peak_memory=ex.usage.peak_memory if ex.usage else None,
            cpu_seconds=round(ex.usage.cpu_seconds, 3)
            if ex.usage and ex.usage.cpu_seconds is not None
            else None,
            ended_at=ex.ended_at,
        )
        claim, free = self.keys.claim(run.id), ex.fenced_releases()  # fenced: slots go (D319)
        # waits a moment for other completions to share its transaction, unless a workflow's next
        # tasks wait for it (D353)
        linger = 0.0 if run.execution else COMPLETION_LINGER
        delay = 0.1
        while not self.session.lost.is_set():
            try:
                guard = [Compare.created(claim, ex.claim_revision)]
                res = await self.batch.txn(guard, ops, free, linger=linger)
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
