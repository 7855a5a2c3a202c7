"""Side by side: the same workloads on the schedulers a Python user would pick instead of cronmesh
(Celery beat + worker on Redis, APScheduler 3 with its memory and its SQLite store, Airflow's
standalone executor for the DAG case), started by the benchmark on loopback in the same run, with
the ratios cronmesh/peer per metric.

    python -m bench.peers [--quick] [--only celery,apscheduler,airflow]

The peers run in their own virtualenvs (``bench/.venv-peers``, ``bench/.venv-airflow``), made
from the pinned requirements files here; ``redis-server`` comes from Debian (apt). Nothing in this
package's ``__init__`` imports a peer: the peer-side modules (``task``, ``celery_app``,
``apsched_run``, ``airflow_dags``) run only inside those virtualenvs.
"""

from __future__ import annotations

from typing import Any

PEERS = ("celery", "apscheduler", "airflow")


def run_all(
    ctx: Any = None,
    *,
    quick: bool | None = None,
    only: set[str] | None = None,
    cronmesh: str = "latest",
) -> dict[str, Any]:
    """Set up, run every peer (or ``only`` those), write ``bench/results/peers_*.json`` and
    return that document. ``ctx`` may be ``bench.scenarios.Context`` (its ``mode.quick`` is
    used) or an ``argparse`` namespace with ``quick``. Blocking: from async code, call it through
    ``asyncio.to_thread``. Every process it starts is stopped before it returns or raises."""
    from bench.peers.main import run

    if quick is None:
        mode = getattr(ctx, "mode", ctx)
        quick = bool(getattr(mode, "quick", False))
    return run(quick=quick, only=set(only or PEERS), cronmesh=cronmesh)
