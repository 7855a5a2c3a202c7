"""Attack: queue runs no node may take (a selector nobody matches), so that every worker looks at
each of them again at every dispatch: 1,400 of them cost a follower 1 ms of CPU per cluster tick
(docs/benchmarks.md). A worker looks at such a run once per cluster-view version (parked, D358),
and still takes it when the view changes in its favour; the hand-off after the delay is
`tests/integration/test_placement.py::test_a_full_preferred_node_hands_runs_off_after_the_delay`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from cluster.models import Run
from cluster.placement import Candidate
from tests.conftest import wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"


async def test_a_run_no_node_may_take_is_looked_at_once_per_view_and_runs_when_one_comes(
    cluster, monkeypatch
):
    n1 = await cluster.start("n1", properties={"zone": "eu1"})
    worker = n1.worker
    assert worker is not None and worker.view is not None
    looks: Counter[tuple[str, int]] = Counter()  # (queue key, view version) -> looks
    passes = [0]
    choose, dispatch = worker._choose, worker._dispatch

    def counting_choose(key: str, run: Run) -> tuple[Candidate, str] | None:
        looks[key, worker.view.version] += 1
        return choose(key, run)

    def counting_dispatch() -> None:
        passes[0] += 1
        dispatch()

    monkeypatch.setattr(worker, "_choose", counting_choose)
    monkeypatch.setattr(worker, "_dispatch", counting_dispatch)
    job = {"command": "true", "target": {"selector": "gpu=true"}}
    assert (await cluster.request("PUT", f"{JOBS}/train", json=job))[0] == 201
    ids = []
    for _ in range(8):
        status, run = await cluster.request("POST", f"{JOBS}/train/runs", json={})
        assert status == 201
        ids.append(run["id"])
    await wait_for(
        lambda: len({k for k, _ in looks}) == 8 and len(worker._parked) == 8, what="all parked"
    )
    for _ in range(20):  # dispatches that find nothing new: the parked runs are not looked at
        before = passes[0]
        worker.kick()
        await wait_for(lambda before=before: passes[0] > before, what="a dispatch")
    assert passes[0] >= 20
    # once per run and view version (the view moves when the project's records are written)
    assert max(looks.values()) == 1, looks
    assert sum(looks.values()) < 8 * 20  # without parking: every run at every dispatch
    await cluster.start("n2", properties={"gpu": "true"})  # the view moves: n2 takes them

    async def all_done() -> Any:
        runs = [(await cluster.request("GET", f"{RUNS}/{i}"))[1] for i in ids]
        return runs if all(r["status"] == "succeeded" for r in runs) else None

    runs = await wait_for(all_done, 30, what="the runs ran on the node that came")
    assert {r["node"] for r in runs} == {"n2"}
    await wait_for(lambda: len(worker._parked) == 0, what="parked entries gone with their keys")
