"""Which finished runs leave etcd: beyond a job's ``keep_runs`` newest, or older than ``keep_days``.

Pure: takes the ids (snowflakes, time-ordered) and ``now``; the scheduler archives the records
it returns to the log store, then deletes them from etcd.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cluster.ids import id_floor

# A deleted job's runs stay, listed under the job marked deleted, until these limits (D181).
DELETED_JOB_KEEP_RUNS = 100
DELETED_JOB_KEEP_DAYS = 30.0


def expired_runs(
    finished_ids: list[str],
    *,
    keep: int,
    keep_days: float,
    now: datetime,
    active: set[str] | frozenset[str] = frozenset(),
    limit: int = 1000,
) -> list[str]:
    """Oldest first: the ids past the count limit, plus those made before ``now - keep_days``
    (``keep_days`` 0 = no age limit); never an active run; at most ``limit`` per call."""
    ids = sorted(finished_ids)
    doomed = set(ids[: max(0, len(ids) - keep)])
    if keep_days > 0:
        cutoff = id_floor(now - timedelta(days=keep_days))
        doomed.update(i for i in ids if i < cutoff)
    return sorted(doomed - set(active))[:limit]
