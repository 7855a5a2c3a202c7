"""``resources`` through the API and a real node: bad limits are a 4xx naming the field with
nothing stored; a run over its memory limit ends ``failed`` with reason ``oom_killed``; every
attempt records its peak memory and CPU time, shown by ``cronmesh run get``; ``/status`` and
``/metrics`` say how runs are contained."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.conftest import run_cli, wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"
WORKFLOWS = "/api/v1/projects/default/workflows"


def counter(text: str, series: str) -> float:
    """A sample of the Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


async def finished_run(cluster, run_id: str) -> dict:
    async def done():
        status, run = await cluster.request("GET", f"{RUNS}/{run_id}")
        return run if status == 200 and run["status"] not in ("pending", "running") else None

    return await wait_for(done, 60, what=f"run {run_id} finished")


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"memory": "12 apples"}, "resources.memory"),
        ({"memory": "1Ki"}, "resources.memory"),
        ({"cpu": 5000}, "resources.cpu"),
        ({"pids": -1}, "resources.pids"),
        ({"gpu": 1}, "resources.gpu"),
    ],
)
async def test_bad_limits_are_a_4xx_naming_the_field_and_nothing_is_stored(
    cluster, resources, field
):
    await cluster.start()
    job = {"name": "limited", "command": "true", "resources": resources}
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 400, body
    assert body["error"]["field"] == field, body
    status, _ = await cluster.request("GET", f"{JOBS}/limited")
    assert status == 404
    wf = {"name": "wf", "tasks": [{"name": "t", "command": "true", "resources": resources}]}
    status, body = await cluster.request("POST", WORKFLOWS, json=wf)
    assert status == 400 and body["error"]["field"] == f"tasks.0.{field}", body
    status, _ = await cluster.request("GET", f"{WORKFLOWS}/wf")
    assert status == 404


async def test_status_and_metrics_show_the_containment(cluster):
    node = await cluster.start()
    status, body = await cluster.request("GET", "/status")
    assert status == 200
    containment = body["node"]["containment"]
    assert containment == {
        **node.containment.layout.describe(),
        "pool": containment["pool"],
        "fence": containment["fence"],
    }
    if node.containment.layout.enabled:  # the run cgroups kept for reuse (D340)
        assert containment["pool"]["size"] > 0 or containment["pool"]["note"]
    assert containment["fence"]["alive"] is True
    assert 0 < containment["fence"]["valid_for"] <= 3  # the lease TTL of the fixture
    status, text = await cluster.request("GET", "/metrics")
    assert f'cronmesh_cgroup_mode{{mode="{containment["mode"]}"}} 1.0' in text
    code, out, err = await asyncio.to_thread(run_cli, cluster.url(), "status")
    assert code == 0, err
    assert f"runs contained by: {containment['mode']} (kill: {containment['kill']}" in out


async def test_oom_killed_run_and_usage_on_each_attempt(cluster):
    node = await cluster.start()
    if "memory" not in node.containment.layout.limits:
        pytest.skip(f"no memory limit on this machine: {node.containment.layout.reason}")
    grab = "x = []\nwhile True: x.append(bytearray(4 << 20))\n"
    job = {
        "name": "greedy",
        "command": f"{sys.executable} -c '{grab}'",
        "resources": {"memory": "48Mi", "pids": 50, "cpu": 1},
        "retries": 1,
        "retry_interval": 0,
    }
    status, text = await cluster.request("GET", "/metrics")  # counters are per process
    ooms_before = counter(text, "cronmesh_oom_killed_runs_total")
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body
    assert body["resources"] == {"memory": 48 << 20, "pids": 50, "cpu": 1.0}
    status, run = await cluster.request("POST", f"{JOBS}/greedy/runs", json={})
    run = await finished_run(cluster, run["id"])
    assert run["status"] == "failed" and run["reason"] == "oom_killed", run
    assert "out-of-memory" in run["error"] and "48.0Mi" in run["error"]
    assert [a["reason"] for a in run["attempts"]] == ["oom_killed", "oom_killed"]  # retried
    for attempt in run["attempts"]:
        assert 24 << 20 < attempt["peak_memory"] <= 49 << 20, attempt
        assert attempt["cpu_seconds"] > 0
    code, out, err = await asyncio.to_thread(run_cli, cluster.url(), "run", "get", run["id"])
    assert code == 0, err
    assert "reason: oom_killed" in out and "peak_memory:" in out and "cpu_seconds:" in out
    status, text = await cluster.request("GET", "/metrics")
    assert counter(text, "cronmesh_oom_killed_runs_total") - ooms_before == 2


async def test_a_run_within_its_limits_succeeds_with_its_usage(cluster):
    node = await cluster.start()
    job = {"name": "modest", "command": "echo fine", "resources": {"memory": "64Mi"}}
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body
    status, run = await cluster.request("POST", f"{JOBS}/modest/runs", json={})
    run = await finished_run(cluster, run["id"])
    assert run["status"] == "succeeded" and run["reason"] is None, run
    (attempt,) = run["attempts"]
    if node.containment.layout.enabled:
        assert attempt["peak_memory"] > 0 and attempt["cpu_seconds"] is not None
    else:
        assert attempt["peak_memory"] is None and attempt["cpu_seconds"] is None
    # the next run gets the same cgroups back, its usage its own (D340)
    status, again = await cluster.request("POST", f"{JOBS}/modest/runs", json={})
    again = await finished_run(cluster, again["id"])
    assert again["status"] == "succeeded", again
    status, body = await cluster.request("GET", "/status")
    pool = body["node"]["containment"]["pool"]
    if node.containment.layout.enabled and pool["size"]:
        assert pool["reused"] >= 1 and pool["made"] == 1, pool
        (attempt,) = again["attempts"]
        assert 0 < attempt["peak_memory"] < 16 << 20 and attempt["cpu_seconds"] < 1, attempt


async def test_a_node_without_cgroups_runs_the_job_and_says_which_limits_it_skipped(cluster):
    node = await cluster.start(cgroups="off")
    assert node.containment.layout.mode == "none"
    status, text = await cluster.request("GET", "/metrics")  # counters are per process
    skipped = 'cronmesh_limits_not_applied_total{resource="memory"}'
    before = counter(text, skipped)
    job = {"name": "unlimited", "command": "echo ran", "resources": {"memory": "64Mi", "pids": 9}}
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body
    status, run = await cluster.request("POST", f"{JOBS}/unlimited/runs", json={})
    run = await finished_run(cluster, run["id"])
    assert run["status"] == "succeeded", run
    (attempt,) = run["attempts"]
    assert attempt["peak_memory"] is None and attempt["cpu_seconds"] is None
    status, text = await cluster.request("GET", f"{RUNS}/{run['id']}/logs")
    assert status == 200
    assert "cannot apply the limits memory, pids" in text and "ran" in text, text
    status, metrics = await cluster.request("GET", "/metrics")
    assert counter(metrics, skipped) - before == 1
    assert 'cronmesh_cgroup_mode{mode="none"} 1.0' in metrics
