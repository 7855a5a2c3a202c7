"""How an attempt ended, decided from what the worker knows (pure: no I/O): the outcome of an
exit status given what was asked of the run (timeout, cancel, shutdown, interrupt) and what its
cgroup saw (an out-of-memory kill), and the outcome of a run that never started. Split from
``nodes.worker.executing`` (D310), which is the only user."""

from __future__ import annotations

from typing import Any

from cluster.resources import format_bytes
from logstore.spool import SpoolWriter
from nodes.executor.process import ExitStatus
from nodes.worker.attempt import Execution

# The error of a run stopped by a user: the spelling answers use for the status (D509)
BY_REQUEST = {"cancel": "cancelled by request", "abort": "aborted by request"}


class Outcomes:
    """The outcome decisions of :class:`~nodes.worker.executing.Executing`."""

    @staticmethod
    def _not_started(
        ex: Execution, writer: SpoolWriter
    ) -> tuple[str, str | None, ExitStatus | None, Any]:
        """A run claimed ahead and cancelled (or its node shut down) before its instant."""
        # never started: a node stopping (even at once) hands it on as lost (retried per policy)
        stopping = ex.requested in ("shutdown", "interrupt")
        why = (
            "the node shut down"
            if stopping
            else BY_REQUEST.get(ex.requested or "", f"{ex.requested}ed by request")
        )
        writer.note(f"{why} before it started")
        status = "lost" if stopping else "cancelled"
        return status, f"{why} before it started", None, None

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
            return "cancelled", BY_REQUEST[ex.requested]
        elif ex.requested == "shutdown":
            return "lost", "the node shut down before the run finished"
        elif ex.requested == "interrupt":
            # The node knows it killed it: cancelled, not lost, and not retried (D245).
            ex.reason = "interrupted"
            return "cancelled", (
                "interrupted: its node was told to stop at once (a second Ctrl-C, SIGINT or "
                "SIGTERM, while it drained)"
            )
        if st.ok:
            return "succeeded", None
        if st.signal is not None:
            return "failed", f"killed by signal {st.signal}"
        return "failed", f"exit code {st.exit_code}"
