"""Paths and a wait shared by the API integration tests: the default project's jobs and runs
collections, and ``run_done`` (wait until a run has finished)."""

from __future__ import annotations

from tests.conftest import wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"


async def run_done(
    cluster, run_id, statuses=("succeeded", "failed", "timed_out", "cancelled", "lost")
):
    async def finished():
        status, run = await cluster.request("GET", f"{RUNS}/{run_id}")
        return run if status == 200 and run["status"] in statuses else None

    return await wait_for(finished, 20, what=f"run {run_id} finished")
