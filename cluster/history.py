"""What a run or an execution record is charged to its project's run-history quota (D318).

A record's charge is a small key of its own (``Keys.history_charge``) written in the same
transaction as the record: when it is created, when it finishes, when it is deleted. So the sum of
a project's charges is exact whatever crashes — no counter anyone must update, nothing two writers
contend for. While a record may still grow (a pending or running run: its result, its attempts,
its queue entry), it is charged what it may grow to; a finished run is charged the bytes it
takes. The leader sums the charges (``nodes.leader.history``); creations are refused while the sum
is at the quota. Pure: plain values in, numbers out.
"""

from __future__ import annotations

from cluster.models import Run
from cluster.quotas import (
    ATTEMPT_BYTES,
    EXECUTION_RESULT_BYTES,
    RUN_RECORD_BYTES,
    RUN_RESULT_BYTES,
    TASK_RESULT_BYTES,
)

# A rerun keeps the earlier task runs on the execution (``previous_runs``): at most this many
# reruns of one execution (D318), each counted by its task runs' charges.
MAX_RERUNS = 20


def run_charge(run: Run, doc_bytes: int) -> int:
    """The charge of a run record of ``doc_bytes`` stored bytes: exactly those when the run is
    finished; while it is not, the record plus its queue entry (a pending run's copy) plus what
    it may still gain — a result (at most ``RUN_RESULT_BYTES`` stored), the remaining attempts'
    entries and the fields a finish sets."""
    if run.finished:
        return doc_bytes
    attempts_left = max(run.snapshot.retries + 1 - len(run.attempts), 1)
    return 2 * doc_bytes + RUN_RESULT_BYTES + RUN_RECORD_BYTES + attempts_left * ATTEMPT_BYTES


def execution_charge(doc_bytes: int, tasks: int) -> int:
    """The charge of an execution record: its bytes at creation plus the task results it may
    keep (``TASK_RESULT_BYTES`` each, ``EXECUTION_RESULT_BYTES`` in all) and the fields each
    task's state gains. Not trued up when it finishes: the engine's writes stay as they are (an
    over-count, D318)."""
    results = min(tasks * TASK_RESULT_BYTES, EXECUTION_RESULT_BYTES)
    return doc_bytes + results + tasks * RUN_RECORD_BYTES


def over_quota(used: int, adding: int, limit: int) -> bool:
    """Would ``adding`` bytes pass ``limit`` with ``used`` charged? Nothing added always fits."""
    return adding > 0 and used + adding > limit


def parse_bytes(value: bytes | str | None) -> int:
    """A charge or total as stored (a decimal); anything else counts 0."""
    if value is None:
        return 0
    try:
        n = int(value)
    except ValueError:
        return 0
    return max(n, 0)
