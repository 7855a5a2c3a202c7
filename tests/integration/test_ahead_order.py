"""The worker's ahead pass (D121) on real in-process nodes: while its capacity is full, a node
arms the runs due next in queue order — higher priority first, then the oldest (D33) — so when
there are fewer armed places than runs due together, the higher-priority run gets the place.

The pass reads its keys through ``Parking.looks`` (D358: sorted, less what is parked); the
mutation ``ahead-pass-order`` reverses that order."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for

JOBS = "/api/v1/projects/default/jobs"
GROUPS = "/api/v1/groups"


@pytest.mark.timeout(120)
async def test_a_full_node_arms_the_higher_priority_run_of_those_due_together(cluster, tmp_path):
    await cluster.start("lead")  # the leader; the jobs are bound to the other node
    node = await cluster.start("worker", capacity=1, max_armed=1)
    worker = node.worker
    assert worker is not None
    req = cluster.request
    await req("PUT", f"{GROUPS}/pin", json={"projects": ["default"]})
    await req("PUT", f"{GROUPS}/pin/bindings/only", json={"node": "worker"})
    await wait_for(
        lambda: worker.view and worker.view.placement("pin", "").candidates, what="binding seen"
    )
    pin = {"target": {"group": "pin"}}
    blocker = f"touch {tmp_path}/blocking; sleep 60"
    await req("PUT", f"{JOBS}/block", json={"command": blocker, **pin})
    status, _ = await req("POST", f"{JOBS}/block/runs", json={})
    assert status == 201
    await wait_for(lambda: (tmp_path / "blocking").exists(), 20, what="the node is full")
    # due at the same instants, so fired together (created while the cluster is frozen: none
    # fires alone before the other exists): the one armed place ahead goes to "high"
    every = {"command": "true", "schedules": [{"cron": "*/4 * * * * *"}], **pin}
    assert (await req("PUT", "/api/v1/freeze", json={"note": "creating the jobs"}))[0] == 200
    for name, priority in (("low", 0), ("high", 9)):
        status, body = await req("PUT", f"{JOBS}/{name}", json={**every, "priority": priority})
        assert status in (200, 201), body
    assert (await req("DELETE", "/api/v1/freeze"))[0] in (200, 204)

    def armed() -> list[str]:
        return [ex.run.job for ex in worker.running.values() if ex.run.job in ("low", "high")]

    assert await wait_for(armed, 20, 0.02, "a run armed ahead") == ["high"]
    assert worker.armed() == 1 and worker.busy() >= 1
