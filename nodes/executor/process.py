"""Run one job process and control its whole process tree (Linux only).

A job is started with ``subprocess.Popen(..., start_new_session=True)`` and without a
``preexec_fn``, so CPython spawns it with ``vfork`` + ``exec`` (never a full fork of a large
parent). The child becomes the leader of a new session whose id equals its pid.

*The tree* of a job is every process whose session id (field 6 of ``/proc/<pid>/stat``) is
the main pid. Descendants inherit the session even when they move to another process group
with ``setpgid``, so they are found by a ``/proc`` scan; the main process group is also
signalled with ``killpg`` as a belt. A descendant that calls ``setsid()`` itself leaves the
session and escapes the session kill. Such an escaped process may also keep the output
pipes open; :meth:`Process.wait` then gives up draining them after :attr:`Process.drain_timeout`.

*With a cgroup* (``cgroup=``, where the node has cgroups: D150) the tree is the cgroup instead:
the process is spawned held on its stdin (``armed_argv``), moved into its cgroup, then released,
so everything it forks is in there whatever it does with sessions; SIGKILL is ``cgroup.kill``
(or a freezer sweep on v1), other signals go to every member, and the leftovers after the main
process exits are the cgroup's members.

Waiting uses no threads and no SIGCHLD: the main process is watched through a pidfd
(``os.pidfd_open``) registered with ``loop.add_reader``; the output pipes are non-blocking
fds registered the same way. This works with the default asyncio loop and with uvloop.

Pid safety: once the pidfd reports the exit, the exit status is read with
``waitid(..., WNOWAIT)``, which leaves the main process a zombie. While it is a zombie its pid
(and therefore the session id and the process group id) cannot be reused, so the tree can be
found and signalled without racing pid reuse. The zombie is reaped (only that pid, never
``waitpid(-1)``) once the leftovers of the tree are gone; from then on signalling is a no-op.

After the main process exits, processes still in its session (``sleep 100 &``) are sent
SIGTERM, given :attr:`Process.leftover_grace` seconds, then SIGKILL, so a run leaves no
stragglers and its pipes reach EOF. The leftover lookups go through
:mod:`nodes.executor.sessionscan`, which answers the lookups of all the jobs that exit at about
the same time with one pass over ``/proc`` in a worker thread, so a burst of exits never stalls
the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal as _signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from cluster.waiting import within
from nodes.executor.arming import armed_argv
from nodes.executor.cgroups import RunCgroup, cgroup_io
from nodes.executor.child import Child, abandon, spawn
from nodes.executor.pipes import OutputPipe
from nodes.executor.sessionscan import scanner, session_members

__all__ = ["ExitStatus", "OutputCallback", "Process", "session_members"]

log = structlog.get_logger(__name__)

OutputCallback = Callable[[str, bytes], None]
"""``(stream, chunk)`` with stream ``"stdout"`` or ``"stderr"``; called on the loop thread."""


@dataclass(frozen=True)
class ExitStatus:
    """How the main process of a job ended."""

    exit_code: int | None  # None when killed by a signal (or when the status was lost)
    signal: int | None  # the signal that killed the main process, else None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Process:
    """One running job and its process tree. Create it with :meth:`start`."""

    leftover_grace: float = 0.5  # s leftovers get between SIGTERM and SIGKILL after the exit
    kill_timeout: float = 2.0  # s to keep SIGKILLing leftovers that stay (uninterruptible sleep)
    drain_timeout: float = 2.0  # s to wait for EOF on the output once the tree is gone (escapees)

    pid: int

    def __init__(
        self,
        child: Child,
        pidfd: int,
        on_output: OutputCallback,
        loop: asyncio.AbstractEventLoop,
        cgroup: RunCgroup | None = None,
    ) -> None:
        # the child's pipes are this process's from here, whatever happens below
        stdout, stderr, self._stdin = child.stdout, child.stderr, child.stdin
        child.stdin = child.stdout = child.stderr = None
        assert stdout is not None and stderr is not None
        self.pid = child.pid
        self.cgroup = cgroup
        self._popen = child.popen
        self._pidfd: int | None = pidfd
        self._on_output = on_output
        self._loop = loop
        self._reaped = False
        self._kill_requested = False
        self._callback_failed = False
        self._status: ExitStatus | None = None
        self._exited: asyncio.Future[None] = loop.create_future()
        self._pipes: list[OutputPipe] = []
        try:
            self._pipes.append(OutputPipe(loop, "stdout", stdout, self._emit))
            stdout = None
            self._pipes.append(OutputPipe(loop, "stderr", stderr, self._emit))
            stderr = None
            loop.add_reader(pidfd, self._on_pidfd)
        except BaseException:
            for pipe in self._pipes:
                pipe.close()
            for fd in (stdout, stderr):  # not handed to a pipe
                if fd is not None:
                    os.close(fd)
            self.disarm()
            raise
        self._task: asyncio.Task[ExitStatus] = loop.create_task(self._supervise())

    # ----------------------------------------------------------------------------- public

    @classmethod
    async def start(
        cls,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        on_output: OutputCallback,
        armed: bool = False,
        cgroup: RunCgroup | None = None,
        prefix: list[str] | None = None,
        umask: int = -1,
    ) -> Process:
        """Spawn ``argv`` in a new session. Raises OSError when it cannot be started.

        ``armed``: spawn now but hold the command until :meth:`release` (see ``armed_argv``);
        the process waits on its stdin, which is /dev/null again once it is released.
        ``prefix``: a command that execs the rest (``setpriv …``, which switches users), put
        outside the arming so it runs when the process is spawned, not at its release.
        ``umask``: the child's (-1: this process's); applied without giving up ``vfork``.

        ``cgroup``: the process is spawned armed, moved into this (created) cgroup, and only
        then released (at once unless ``armed``): the command, and everything it forks, runs
        inside the cgroup from its first instruction (CPython has no ``CLONE_INTO_CGROUP``).
        """
        loop = asyncio.get_running_loop()
        hold = armed or cgroup is not None
        # No preexec_fn: CPython uses vfork+exec, so this returns as soon as the child has
        # exec'd (or failed to); it never copies the parent's address space. That is short
        # enough to do on the loop (asyncio.create_subprocess_exec does the same).
        child = spawn(
            [*(prefix or ()), *(armed_argv(argv) if hold else argv)],
            env=env,
            cwd=cwd,
            umask=umask,
            held=hold,
        )
        try:
            if cgroup is not None:
                # Still waiting on its stdin: nothing of the job ran yet. Off the loop: moving a
                # process between cgroups may wait for an RCU grace period (~10 ms, D150).
                await loop.run_in_executor(cgroup_io(), cgroup.add, child.pid)
            pidfd = os.pidfd_open(child.pid)
        except BaseException:  # OSError, or cancelled meanwhile: nothing may be left running
            abandon(child)
            raise
        try:
            proc = cls(child, pidfd, on_output, loop, cgroup)
        except BaseException:
            os.close(pidfd)
            abandon(child)
            raise
        if hold and not armed:
            proc.release()
        log.debug("job process started", pid=proc.pid, argv=argv[:1])
        return proc

    def release(self) -> bool:
        """Let an armed process run its command (one write; nothing else happens on the loop).
        False when it cannot be released (it died meanwhile): it then runs nothing."""
        stdin, self._stdin = self._stdin, None
        if stdin is None:
            return True  # not armed: it runs already
        try:
            os.write(stdin, b"go\n")
        except OSError:
            return False
        finally:
            os.close(stdin)
        return True

    @property
    def held(self) -> bool:
        """True while an armed process waits for its release (or its disarming)."""
        return self._stdin is not None

    def disarm(self) -> None:
        """Close an armed process's stdin unreleased: it exits (125) without running anything."""
        stdin, self._stdin = self._stdin, None
        if stdin is not None:
            os.close(stdin)

    def on_exit(self, callback: Callable[[], None]) -> None:  # soon after the main process exits
        self._exited.add_done_callback(lambda _: callback())

    @property
    def returncode_ready(self) -> bool:
        """True once the main process has exited (the tree may still be cleaned up)."""
        return self._exited.done()

    async def wait(self) -> ExitStatus:
        """Wait for the main process, clean up the rest of the tree, drain the output.

        Cancelling a caller does not cancel the supervision; every caller gets the same result.
        """
        return await asyncio.shield(self._task)

    def signal_tree(self, sig: int) -> None:
        """Send ``sig`` to every process of the tree. Never raises for vanished processes."""
        if self.cgroup is not None:
            # Every process of the run, wherever it moved its session or group to.
            self.cgroup.signal(sig)
            if self._reaped:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)
            return
        if self._reaped:
            return  # the pid may be reused from now on: never signal it again
        pids = set(session_members(self.pid))
        pids.add(self.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        for pid in sorted(pids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    async def stop(self, grace: float) -> None:
        """SIGTERM the tree, give the main process ``grace`` seconds, then SIGKILL the tree."""
        if self._reaped and self.cgroup is None:
            return
        self.signal_tree(_signal.SIGTERM)
        if not self._exited.done():
            with contextlib.suppress(TimeoutError):
                await within(asyncio.shield(self._exited), max(0.0, grace))
        if not self._exited.done():
            log.info("job ignored SIGTERM: killing its tree", pid=self.pid, grace=grace)
            self.kill()

    def kill(self) -> None:
        """SIGKILL the tree at once."""
        self._kill_requested = True
        self.signal_tree(_signal.SIGKILL)

    # ---------------------------------------------------------------------------- internal

    def _emit(self, stream: str, data: bytes) -> None:
        try:
            self._on_output(stream, data)
        except Exception:
            if not self._callback_failed:  # keep reading so the job never blocks on a full pipe
                self._callback_failed = True
                log.exception("output callback failed", pid=self.pid, stream=stream)

    def _on_pidfd(self) -> None:
        if self._exited.done():
            return
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            # Someone else reaped our child (waitpid(-1) elsewhere): the status is lost.
            log.warning("job exit status lost: reaped elsewhere", pid=self.pid)
            self._mark_reaped(None)
            self._status = ExitStatus(exit_code=None, signal=None)
            self._close_pidfd()
            self._exited.set_result(None)
            return
        if info is None:  # readable but not waitable yet: look again shortly
            self._unwatch_pidfd()
            self._loop.call_later(0.05, self._rewatch_pidfd)
            return
        if info.si_code == os.CLD_EXITED:
            self._status = ExitStatus(exit_code=info.si_status, signal=None)
        else:  # CLD_KILLED / CLD_DUMPED
            self._status = ExitStatus(exit_code=None, signal=info.si_status)
        self._close_pidfd()
        self._exited.set_result(None)

    def _rewatch_pidfd(self) -> None:
        if self._pidfd is not None and not self._exited.done():
            self._loop.add_reader(self._pidfd, self._on_pidfd)

    def _unwatch_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._unwatch_pidfd()
            os.close(self._pidfd)
            self._pidfd = None

    async def _supervise(self) -> ExitStatus:
        try:
            await self._exited
            await self._clean_leftovers()
            self._reap()
            await self._drain()
        except asyncio.CancelledError:
            # The loop is going away (or someone cancelled the supervisor): leave nothing
            # behind. SIGKILL is quick, so the bounded blocking reap below is short.
            self.kill()
            self._reap(block=1.0)
            raise
        finally:
            self._close_pidfd()
            for pipe in self._pipes:
                pipe.close()
        assert self._status is not None
        return self._status

    async def _clean_leftovers(self) -> None:
        leftovers = await self._leftovers()
        if not leftovers:
            return
        loop = self._loop
        if not self._kill_requested:
            log.info("killing leftover job processes", pid=self.pid, leftovers=leftovers)
            self.signal_tree(_signal.SIGTERM)
            if await self._wait_gone(loop.time() + self.leftover_grace):
                return
        deadline = loop.time() + self.kill_timeout
        while True:
            self.signal_tree(_signal.SIGKILL)
            if await self._wait_gone(min(deadline, loop.time() + 0.1)):
                return
            if loop.time() >= deadline:
                log.warning(
                    "job processes survive SIGKILL", pid=self.pid, leftovers=await self._leftovers()
                )
                return

    async def _leftovers(self) -> list[int]:
        """Live processes of the run other than the main one: the members of its cgroup (one
        small read), else of its session (a shared, off-loop scan of /proc)."""
        if self.cgroup is not None:
            return [p for p in self.cgroup.members() if p != self.pid]
        return [p for p in await scanner().members(self.pid) if p != self.pid]

    async def _wait_gone(self, deadline: float) -> bool:
        """Poll until no leftover remains (True) or the deadline passes (False)."""
        delay = 0.005
        while True:
            if not await self._leftovers():
                return True
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)

    def _reap(self, block: float = 0.0) -> None:
        """Reap the main pid (only that pid, never ``waitpid(-1)``); then never signal it again.

        ``block`` > 0 is only used on the cancellation path, right after SIGKILL.
        """
        if self._reaped:
            return
        end = time.monotonic() + block
        while True:
            try:
                pid, wstatus = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # already reaped elsewhere
                self._mark_reaped(None)
                return
            if pid:
                self._mark_reaped(wstatus)
                return
            if time.monotonic() >= end:
                return  # still running; Popen's own bookkeeping reaps it later
            time.sleep(0.01)

    def _mark_reaped(self, wstatus: int | None) -> None:
        self._reaped = True
        if self._popen.returncode is None:  # keeps Popen.__del__ from reporting it as running
            self._popen.returncode = (
                os.waitstatus_to_exitcode(wstatus) if wstatus is not None else 0
            )

    async def _drain(self) -> None:
        pending = [p.eof for p in self._pipes if not p.eof.done()]
        if not pending:
            return
        _done, not_done = await asyncio.wait(pending, timeout=self.drain_timeout)
        if not_done:
            for pipe in self._pipes:
                pipe.drain_available()
            log.warning(
                "job output still open after the tree exited (escaped process?): giving up",
                pid=self.pid,
                timeout=self.drain_timeout,
            )
