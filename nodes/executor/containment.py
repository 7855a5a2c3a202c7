"""What a node uses to hold its runs: the cgroup layout it detected and its fence process.

Made once when the node starts (:meth:`Containment.start`): detects the cgroups
(``nodes.executor.cgroups``), reaps the run cgroups a previous incarnation of this node left
behind, starts the fence (``nodes.executor.fence``). The worker asks it for one
:class:`~nodes.executor.cgroups.RunCgroup` per attempt; the
session tells it until when the lease is surely alive (:meth:`valid_until`, from its refresh
thread). See docs/architecture.md D150-D152.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import structlog

from nodes import metrics
from nodes.executor import cgroups
from nodes.executor.cgroup_pool import SIZE, CgroupPool
from nodes.executor.cgroups import NONE, Layout, RunCgroup, cgroup_io

log = structlog.get_logger(__name__)

_FENCE_ENV = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL")


class Containment:
    def __init__(
        self, node_id: str, data_dir: str, *, use_cgroups: bool = True, pool_size: int = SIZE
    ) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        self.use_cgroups = use_cgroups
        self.pool_size = pool_size  # idle run cgroups kept: what runs and is armed at once (D464)
        self.layout: Layout = NONE
        self.pool: CgroupPool | None = None  # the run cgroups, reused (D340)
        self.reaped = 0
        self._fence: subprocess.Popen[bytes] | None = None
        self._write_fd: int | None = None
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._sessions: set[int] = set()
        self.fence_restarts = 0
        self.fence_dropped = 0
        self._closed = False

    # -- start and stop -------------------------------------------------------------------

    def start(self) -> None:
        """Detect, reap leftovers, start the fence. Blocking but short (start-up only)."""
        if self.use_cgroups:
            self.layout = cgroups.detect(self.node_id, self.data_dir)
        else:
            self.layout = Layout(mode="none", reason="cgroups turned off (config cgroups: off)")
        if self.layout.enabled:
            left = cgroups.reap(self.layout)
            self.reaped = len(left)
            if left:
                log.warning("reaped runs left by a previous incarnation", cgroups=len(left))
            self.pool = CgroupPool(self.layout, self.pool_size)
            log.info(
                "cgroups: one per run at a time, reused",
                mode=self.layout.mode,
                kill=self.layout.kill,
                limits=self.layout.limits,
                pool=self.pool.size,
                note="; ".join(n for n in (self.layout.reason, self.pool.reason) if n) or None,
            )
        else:
            log.warning(
                "cgroups unavailable: runs are killed by process session; a process that "
                "calls setsid() escapes, and no resource limit is applied",
                why=self.layout.reason,
            )
        metrics.CGROUP_MODE.labels(mode=self.layout.mode).set(1)
        self._spawn_fence()

    def _spawn_fence(self) -> None:
        read_fd, write_fd = os.pipe()
        env = {k: os.environ[k] for k in _FENCE_ENV if k in os.environ}
        # The fence imports nodes.executor.fence from wherever this node's code is, installed or
        # not.
        here = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        try:
            self._fence = subprocess.Popen(
                [sys.executable, "-m", "nodes.executor.fence", self.layout.to_json(), self.node_id],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C or SIGSTOP sent to the node's group spares it
                close_fds=True,
                env=env,
            )
        except OSError as exc:
            os.close(write_fd)
            log.error("cannot start the fence process", error=str(exc))
            return
        finally:
            os.close(read_fd)
        os.set_blocking(write_fd, False)
        with self._lock:
            self._write_fd = write_fd
        # What the new fence must know: the current deadline and the watched sessions.
        self._send(self._deadline_line())
        for sid in list(self._sessions):
            self._send(f"S {sid}")
        log.info("fence started", pid=self._fence.pid)

    async def tend(self) -> None:
        """Every second: restart the fence if it died (it should never die), and give back a
        few idle run cgroups unused for a minute (D487), in a ``cgroup-io`` thread."""
        while not self._closed:
            await asyncio.sleep(1.0)
            pool = self.pool
            if pool is not None and pool.stale():
                try:
                    await asyncio.get_running_loop().run_in_executor(cgroup_io(), pool.trim)
                except OSError as exc:
                    log.warning("cannot give idle cgroups back", error=str(exc))
            fence = self._fence
            if fence is not None and fence.poll() is not None and not self._closed:
                log.error("the fence process died: restarting it", returncode=fence.returncode)
                self.fence_restarts += 1
                with self._lock:
                    fd, self._write_fd = self._write_fd, None
                if fd is not None:
                    os.close(fd)
                self._spawn_fence()

    def close(self) -> None:
        """Clean stop: every run is finished; remove the subtree, let the fence go (EOF)."""
        self._closed = True
        if self.pool is not None:
            self.pool.close()
        if self.layout.enabled:
            cgroups.reap(self.layout, timeout=1.0)
            cgroups.remove_subtree(self.layout)
        with self._lock:
            fd, self._write_fd = self._write_fd, None
        if fd is not None:
            os.close(fd)
        if self._fence is not None:
            try:
                self._fence.wait(2.0)
            except subprocess.TimeoutExpired:
                self._fence.kill()
                self._fence.wait(1.0)

    # -- what the fence is told ---------------------------------------------------------------

    def _deadline_line(self) -> str:
        return "V -" if self._deadline is None else f"V {self._deadline:.6f}"

    def _send(self, line: str) -> None:
        with self._lock:
            fd = self._write_fd
            if fd is None:
                return
            try:
                os.write(fd, (line + "\n").encode())
            except BlockingIOError:
                self.fence_dropped += 1  # a fence that does not read: the watcher restarts it
            except OSError:
                pass  # the fence is gone: the watcher restarts it

    def valid_until(self, deadline: float | None) -> None:
        """The lease is surely alive until ``deadline`` (``time.monotonic``); thread-safe."""
        self._deadline = deadline
        self._send(self._deadline_line())

    def watch_session(self, sid: int) -> None:
        """Fallback without cgroups: the fence kills this session if the node goes."""
        if not self.layout.enabled:
            self._sessions.add(sid)
            self._send(f"S {sid}")

    def forget_session(self, sid: int) -> None:
        if not self.layout.enabled and sid in self._sessions:
            self._sessions.discard(sid)
            self._send(f"E {sid}")

    # -- runs ---------------------------------------------------------------------------------

    def run_cgroup(self, run_id: str, attempt: int) -> RunCgroup | None:
        if not self.layout.enabled:
            return None
        return RunCgroup(self.layout, f"run-{run_id}-{attempt}")

    @property
    def fence_pid(self) -> int | None:
        return self._fence.pid if self._fence is not None else None

    def status(self) -> dict[str, object]:
        fence = self._fence
        return {
            **self.layout.describe(),
            "pool": self.pool.describe() if self.pool is not None else None,
            "fence": {
                "pid": fence.pid if fence is not None else None,
                "alive": fence is not None and fence.poll() is None,
                "restarts": self.fence_restarts,
                "valid_for": (
                    None if self._deadline is None else round(self._deadline - time.monotonic(), 3)
                ),
            },
        }
