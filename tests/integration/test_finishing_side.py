"""The finishing side of a run on a real in-process node (D464, D465).

- A node keeps an idle cgroup set and an emptied folder for every run it can hold at once —
  ``capacity`` + ``max_armed`` — not 64: armed processes hold theirs from their spawn, so with
  more than 64 armed a second's ends came back at once, all but 64 were removed, and the next
  second's spawns made them again (D464).
- ... and one for every run whose clean-up waits its turn too: ended runs hold their set until
  the ``cgroup-io`` threads give it back, so a saturated node's sets in use passed ``capacity`` +
  ``max_armed``, and the surplus was made and removed again at every turn (D494).
- ``cronmesh_executions{state}`` says where the node's executions are (D465).
- Runs whose process ended but whose completion is not written yet hold no seat and no armed
  place; past ``capacity`` + ``max_armed`` of them the node takes no run ahead either, so what it
  holds stays bounded while its completions lag (D467).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nodes.executor import launch, spare_dirs
from tests.conftest import wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"
ARMED = 70  # above the 64 idle sets a node kept before D464


def sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.timeout(180)
async def test_runs_armed_together_get_their_cgroups_back_from_the_pool(cluster):
    node = await cluster.start(capacity=4, max_armed=ARMED)
    pool = node.containment.pool
    if pool is None or pool.size == 0:
        pytest.skip("no cgroup pool on this machine (cgroups off, or memory.peak not resettable)")
    assert pool.size == 2 * (4 + ARMED)  # with the ended ones in line (D494)
    assert spare_dirs.spares(node.config.work_path).kept == 2 * (4 + ARMED)
    # ARMED jobs due at the same instant every 3 s: all of them armed at once, each in its set
    spec = {"command": "true", "schedules": [{"cron": "*/3 * * * * *"}]}
    for i in range(ARMED):
        status, body = await cluster.request("PUT", f"{JOBS}/j{i}", json={**spec, "name": f"j{i}"})
        assert status in (200, 201), body
    # three instants after the first one with all of them: each gets the sets back
    await wait_for(lambda: pool.reused >= 3 * ARMED, 120, 0.2, f"{3 * ARMED} runs in kept sets")
    assert pool.dropped == 0, pool.describe()  # before D464: ARMED - 64 removed at each instant
    assert pool.made <= pool.size, pool.describe()  # ... and made again at the next


@pytest.mark.timeout(180)
async def test_sets_held_by_clean_ups_in_line_come_back_to_the_pool(cluster, monkeypatch):
    capacity, max_armed = 2, 8
    node = await cluster.start(capacity=capacity, max_armed=max_armed)
    worker, pool = node.worker, node.containment.pool
    assert worker is not None
    if pool is None or pool.size == 0:
        pytest.skip("no cgroup pool on this machine (cgroups off, or memory.peak not resettable)")
    # the clean-ups (a set given back) wait until the test lets them go, as behind a deep
    # cgroup-io line: the runs of one instant still hold their sets when the next are armed
    let_go = asyncio.Event()
    finish = launch.finish

    async def in_line(*args: Any, **kwargs: Any) -> Any:
        await let_go.wait()
        return await finish(*args, **kwargs)

    monkeypatch.setattr(launch, "finish", in_line)
    spec = {"command": "true", "schedules": [{"cron": "*/2 * * * * *"}]}
    assert (await cluster.request("PUT", "/api/v1/freeze", json={"note": "jobs"}))[0] == 200
    for i in range(max_armed):
        status, body = await cluster.request("PUT", f"{JOBS}/j{i}", json={**spec, "name": f"j{i}"})
        assert status in (200, 201), body
    assert (await cluster.request("DELETE", "/api/v1/freeze"))[0] in (200, 204)

    def phases(phase: str) -> int:
        return sum(ex.phase == phase and ex.proc is not None for ex in worker.running.values())

    def both_held() -> bool:  # an instant's runs in line for their clean-up, the next's armed
        return phases("cleanup") >= max_armed and phases("armed") >= max_armed

    try:
        await wait_for(both_held, 60, 0.01, "ended runs holding sets while the next are armed")
    finally:
        let_go.set()
    # all of them back (2 x max_armed in use at once: past capacity + max_armed), then two more
    # instants: nothing removed, nothing made again
    await wait_for(lambda: pool.reused >= 2 * max_armed, 60, 0.1, "two instants in kept sets")
    assert pool.dropped == 0, pool.describe()  # before D494: 6 removed, made again next time
    assert pool.made <= 2 * max_armed + capacity, pool.describe()


async def test_the_executions_metric_says_where_the_runs_are(cluster):
    node = await cluster.start()
    assert node.worker is not None
    status, body = await cluster.request("PUT", f"{JOBS}/slow", json={"command": "sleep 30"})
    assert status in (200, 201), body
    status, run = await cluster.request("POST", f"{JOBS}/slow/runs", json={})
    assert status == 201, run

    async def metric(state: str) -> float:
        status, text = await cluster.request("GET", "/metrics")
        assert status == 200
        return sample(text, f'cronmesh_executions{{state="{state}"}}')

    async def running() -> bool:
        return await metric("running") == 1

    await wait_for(running, 30, 0.1, "the run counted as running")
    ex = node.worker.running[run["id"]]
    assert ex.proc is not None
    ex.proc.kill()
    await wait_for(lambda: ex.done.is_set(), 30, 0.1, "the run ended")
    for state in ("running", "exited", "cleanup", "completing"):
        assert await metric(state) == 0, state


@pytest.mark.timeout(180)
async def test_completions_that_lag_stop_the_claims_ahead(cluster, monkeypatch):
    capacity, max_armed, jobs = 2, 2, 4
    node = await cluster.start(capacity=capacity, max_armed=max_armed)
    worker = node.worker
    assert worker is not None
    # the node's completions (the transactions that linger, D353) wait until the test lets them
    # go: etcd answers everything else as usual
    let_go = asyncio.Event()
    send = worker.batch.txn

    async def held(compare: Any, success: Any, failure: Any = (), *, linger: float = 0.0) -> Any:
        if linger > 0:
            await let_go.wait()
        return await send(compare, success, failure, linger=linger)

    monkeypatch.setattr(worker.batch, "txn", held)
    spec = {"command": "true", "schedules": [{"cron": "* * * * * *"}]}
    for i in range(jobs):
        status, body = await cluster.request("PUT", f"{JOBS}/j{i}", json={**spec, "name": f"j{i}"})
        assert status in (200, 201), body
    held_most = 0

    def backed_up() -> bool:
        nonlocal held_most
        held_most = max(held_most, len(worker.running))
        # the bound reached, and runs left in the queue (the leader writes a second's runs 1.5
        # s ahead: up to 2 x ``jobs`` wait anyway); before D467 the worker still took
        # ``max_armed`` of each second ahead, each held for ever once it ended
        return len(worker.finishing) >= capacity + max_armed and len(worker.candidates) >= 8 * jobs

    try:
        await wait_for(backed_up, 60, 0.02, "completions past the bound and runs left queued")
    finally:
        let_go.set()
    # ended ones past the bound (at most one more than it) + what was armed, claimed ahead and
    # running when it was reached, which ends too
    assert held_most <= 2 * (capacity + max_armed), held_most
    for i in range(jobs):
        status, body = await cluster.request("PATCH", f"{JOBS}/j{i}", json={"enabled": False})
        assert status == 200, body

    async def settled() -> list[dict[str, Any]] | None:
        if worker.running or worker.candidates or worker.claiming:
            return None
        _, body = await cluster.request("GET", f"{RUNS}?limit=1000")
        return body["runs"]

    runs = await wait_for(settled, 90, 0.1, "every run of the jobs ended")
    assert runs and all(r["status"] == "succeeded" for r in runs), [r["status"] for r in runs]
