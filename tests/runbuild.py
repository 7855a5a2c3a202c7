"""A job as the leader holds it and the builder of its runs' records and operations, made from
plain values for the pure tests of run records (no etcd)."""

from __future__ import annotations

from datetime import datetime

from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import Job
from cluster.runs import RunOps


def stored_job(at: datetime, **extra: object) -> Job:
    """Job ``p/j`` running ``true`` every second, created, edited and active since ``at``;
    ``extra`` adds or replaces fields."""
    doc = {
        "project": "p",
        "name": "j",
        "command": "true",
        "schedules": [{"cron": "* * * * * *"}],
        "created_at": at,
        "updated_at": at,
        "active_since": at,
        **extra,
    }
    return Job.model_validate(doc)


def run_ops(now: datetime, prefix: str = "/t") -> RunOps:
    """The run builder of a cluster under ``prefix`` whose clock says ``now``."""
    return RunOps(Keys(prefix), Snowflake(1), lambda: now)
