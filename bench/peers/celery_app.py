"""The Celery side of the comparison (runs in the peers' virtualenv, started by bench.peers.celery).

``celery -A bench.peers.celery_app worker`` / ``beat``, configured from the environment:
``PEERS_BROKER`` (redis URL), ``PEERS_JOBS`` (how many beat entries), ``PEERS_KIND``
(``every_second``: every whole second; ``once``: once at ``PEERS_AT``, a unix time, plus a
``ping`` entry every second that tells the benchmark the worker is up) and ``PEERS_OUT``.

Celery's own ``schedule(1.0)`` fires one second after the entry's previous run, so entries drift
off the clock grid (and ``crontab`` stops at minutes). A user who wants "every second, on the
second" writes a schedule like ``OnGrid`` below with Celery's public ``schedule`` API; its
``is_due`` answers due once per whole second and sleeps until the next one.
"""

from __future__ import annotations

import math
import os
from datetime import datetime
from typing import Any

from celery import Celery
from celery.schedules import schedstate, schedule

from bench.peers import task

app = Celery("peers", broker=os.environ.get("PEERS_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="peers.run_true")  # type: ignore[untyped-decorator]
def run_true(name: str) -> None:
    task.run_true(name)


class OnGrid(schedule):  # type: ignore[misc]
    """Due once in every whole second of the clock."""

    def __init__(self, app: Any = None) -> None:
        super().__init__(run_every=1.0, app=app)

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = self.now().timestamp()
        last = self.maybe_make_aware(last_run_at).timestamp()
        return schedstate(math.floor(now) > math.floor(last), math.floor(now) + 1 - now)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, ())


class OnceAt(schedule):  # type: ignore[misc]
    """Due once, at unix time ``at``."""

    def __init__(self, at: float, app: Any = None) -> None:
        super().__init__(run_every=3600.0, app=app)
        self.at = at

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = self.now().timestamp()
        last = self.maybe_make_aware(last_run_at).timestamp()
        if now < self.at:
            return schedstate(False, self.at - now)
        return schedstate(last < self.at, 3600.0)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.at,))


def _entries() -> dict[str, dict[str, Any]]:
    n = int(os.environ.get("PEERS_JOBS", "0"))
    kind = os.environ.get("PEERS_KIND", "every_second")
    if kind == "every_second":
        every = {"task": "peers.run_true", "schedule": OnGrid()}
        return {f"j{i:05d}": {**every, "args": (f"j{i:05d}",)} for i in range(n)}
    at = float(os.environ["PEERS_AT"])
    out = {
        f"j{i:05d}": {"task": "peers.run_true", "schedule": OnceAt(at), "args": (f"j{i:05d}",)}
        for i in range(n)
    }
    out["ping"] = {"task": "peers.run_true", "schedule": OnGrid(), "args": ("ping",)}
    return out


app.conf.beat_schedule = _entries()
