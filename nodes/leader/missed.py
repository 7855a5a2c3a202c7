"""The leader's warning about ticks left without a run in a pass (D385)."""

from __future__ import annotations

import structlog

from nodes.leader.jobcache import JobKey

log = structlog.get_logger("nodes.leader.scheduler")  # where operators have always seen it


def report_missed(missed: dict[JobKey, int]) -> None:
    """One warning per pass that left ticks without a run (D385): they were planned more than
    the on-time grace late (downtime, a lease lost, a leader too busy) and each job's
    ``catchup`` policy passed them; the metrics and the ticks view count them too. Clears
    ``missed``."""
    if not missed:
        return
    worst = sorted(missed.items(), key=lambda kv: -kv[1])[:5]
    log.warning(
        "ticks missed",
        jobs=len(missed),
        ticks=sum(missed.values()),
        most=["/".join(jk) + f" x{n}" for jk, n in worst],
    )
    missed.clear()
