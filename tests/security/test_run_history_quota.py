"""A review (High): run records were outside every quota. A record carries its job snapshot and
the request's parameters, a job keeps up to 100,000 runs and a workflow its executions' task
runs, so one editor within the 32 MiB document quota could keep GBs of run history — past
etcd's quota, after which etcd refuses every write for every project.

Now each job/workflow write is checked against the project's ``run_history_bytes`` budget: the
sum over its documents of what their retention lets them keep, each run counted at its bound
(D210). Scaled down through config (a 3 MiB budget instead of 1 GiB).
"""

from __future__ import annotations

from cluster.quotas import run_bytes
from tests.conftest import api_headers, wait_for

BUDGET = 3 * 1024 * 1024


def padded_job(name: str, keep_runs: int, pad: int = 30_000) -> dict:
    return {
        "name": name,
        "command": "true",
        "keep_runs": keep_runs,
        "parameters": {f"PAD{i}": "x" * 4000 for i in range(pad // 4000)},
    }


async def _editor(cluster) -> str:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": "ed", "roles": {"p": "editor"}}
    )
    assert status == 201, body
    status, body = await cluster.request("POST", "/api/v1/users/ed/tokens", json={})
    assert status == 201, body
    return str(body["token"])


async def test_an_editor_cannot_keep_run_history_beyond_the_budget(cluster, etcd, keys):
    await cluster.start(quota_run_history_bytes=BUDGET)
    token = await _editor(cluster)
    base = "/api/v1/projects/p"

    async def call(method: str, path: str, body: object = None) -> tuple[int, dict]:
        async with cluster.http.request(
            method, cluster.url(None, base + path), json=body, headers=api_headers(token)
        ) as resp:
            return resp.status, (await resp.json() if resp.status != 204 else {})

    # the attack: a ~30 KB job keeping 100 runs (the default) could hold >= 3 MB of records
    status, body = await call("PUT", "/jobs/fat", padded_job("fat", 100))
    assert status == 403, body
    assert body["error"]["code"] == "quota_exceeded"
    assert body["error"]["field"] == "quotas.run_history_bytes"
    assert "keep_runs" in body["error"]["message"]
    assert (await call("GET", "/jobs/fat"))[0] == 404  # nothing stored
    assert await etcd.get(keys.history_size("p", "job", "fat")) is None
    assert await etcd.get(keys.doc_size("p", "job", "fat")) is None

    # lowering keep_runs is what the answer asks for: it then fits
    status, body = await call("PUT", "/jobs/fat", padded_job("fat", 3))
    assert status == 201, body
    # raising it again by a patch is refused, and the job keeps its value
    status, body = await call("PATCH", "/jobs/fat", {"keep_runs": 100_000})
    assert status == 403 and body["error"]["field"] == "quotas.run_history_bytes", body
    status, body = await call("GET", "/jobs/fat")
    assert status == 200 and body["keep_runs"] == 3, body

    # many jobs add up: the budget is per project, not per job
    created = 1
    while True:
        status, body = await call("PUT", f"/jobs/f{created}", padded_job(f"f{created}", 3))
        if status != 201:
            break
        created += 1
        assert created < 10, "the budget never refused"
    assert created >= 2, "jobs within the budget were refused"
    assert status == 403 and body["error"]["field"] == "quotas.run_history_bytes", body
    status, project = await cluster.request("GET", base)
    assert status == 200, project
    assert project["quotas"]["run_history_bytes"] == BUDGET
    assert 0 < project["usage"]["run_history_bytes"] <= BUDGET

    # a workflow keeping many executions is counted the same way
    wf = {
        "name": "w",
        "keep_executions": 10_000,
        "tasks": [{"name": "a", "command": "true"}, {"name": "b", "command": "true"}],
    }
    status, body = await call("PUT", "/workflows/w", wf)
    assert status == 403 and body["error"]["field"] == "quotas.run_history_bytes", body
    assert (await call("GET", "/workflows/w"))[0] == 404

    # deleting frees the budget; shrinking always passes even when over a lowered quota
    assert (await call("DELETE", "/jobs/f1"))[0] == 204
    status, after = await cluster.request("GET", base)
    assert after["usage"]["run_history_bytes"] < project["usage"]["run_history_bytes"]
    status, body = await cluster.request("PUT", base, json={"quotas": {"run_history_bytes": 1}})
    assert status == 200, body
    status, body = await call("PATCH", "/jobs/fat", {"keep_runs": 2})
    assert status == 200 and body["keep_runs"] == 2, body


async def test_kept_run_records_stay_within_their_counted_bound(cluster, etcd, keys):
    """The bound holds for real records: runs triggered with the largest parameters and a result
    take no more than what the quota counted for them."""
    await cluster.start(quota_run_history_bytes=BUDGET)
    base = "/api/v1/projects/q"
    job = padded_job("r", 3, pad=20_000)
    job["parameters"].update({f"P{i}": "" for i in range(4)})  # declared: triggers may set them
    job["command"] = (
        'printf \'{"v": "%s"}\' "$(head -c 60000 /dev/zero | tr "\\0" y)" > "$CRONMESH_RESULT_FILE"'
    )
    status, body = await cluster.request("PUT", f"{base}/jobs/r", json=job)
    assert status == 201, body
    for _ in range(5):
        status, body = await cluster.request(
            "POST",
            f"{base}/jobs/r/runs",
            # control characters: stored JSON-escaped, 6 bytes each (16 KB -> 96 KB)
            json={"parameters": {f"P{i}": "\x01" * 4000 for i in range(4)}},
        )
        assert status in (200, 201, 202), body

    async def settled() -> bool:
        s, b = await cluster.request("GET", f"{base}/runs?job=r")
        return s == 200 and len(b["runs"]) >= 3 and all(r["finished_at"] for r in b["runs"])

    await wait_for(settled, 120, what="the triggered runs finished")
    res = await etcd.range_all(keys.runs("q"))
    doc = await etcd.get(keys.job("q", "r"))
    assert doc is not None and res.kvs
    bound = run_bytes(len(doc.value), 0)
    assert max(len(kv.value) for kv in res.kvs) <= bound
    counted = await etcd.get(keys.history_size("q", "job", "r"))
    assert counted is not None and int(counted.value) == 3 * bound

    # a result that grows when stored ("1E15" is stored as 1000000000000000.0) is measured as
    # stored: 60 KB read would be ~230 KB stored, so it is dropped with a reason
    grow = (
        "python3 -c \"print('[' + ','.join(['1E15'] * 12000) + ']')\" > \"$CRONMESH_RESULT_FILE\""
    )
    status, body = await cluster.request(
        "PUT", f"{base}/jobs/n", json={"name": "n", "command": grow, "keep_runs": 1}
    )
    assert status == 201, body
    status, run = await cluster.request("POST", f"{base}/jobs/n/runs", json={})
    assert status in (200, 201, 202), run

    async def done() -> dict | None:
        s, b = await cluster.request("GET", f"{base}/runs/{run['id']}")
        return b if s == 200 and b["finished_at"] else None

    final = await wait_for(done, 120, what="the growing-result run finished")
    assert final["result"] is None and "once stored" in (final["error"] or ""), final


async def test_a_workflow_execution_stays_within_its_counted_bound(cluster, etcd, keys):
    """An execution and its task runs (parameters copied into each, upstream results in the
    environment) take no more than the quota counted for one kept execution."""
    await cluster.start(quota_run_history_bytes=BUDGET)
    base = "/api/v1/projects/w"
    pad = {f"W{i}": "w" * 4000 for i in range(3)}
    result = (
        'printf \'{"v": "%s"}\' "$(head -c 7000 /dev/zero | tr "\\0" y)" > "$CRONMESH_RESULT_FILE"'
    )
    wf = {
        "name": "flow",
        "keep_executions": 1,
        "parameters": {**pad, **{f"P{i}": "" for i in range(3)}},  # declared, as triggered
        "tasks": [
            {"name": "a", "command": result, "parameters": pad},
            {"name": "b", "command": result, "depends_on": ["a"]},
            {"name": "c", "command": "true", "depends_on": ["a", "b"]},
        ],
    }
    status, body = await cluster.request("PUT", f"{base}/workflows/flow", json=wf)
    assert status == 201, body
    status, ex = await cluster.request(
        "POST",
        f"{base}/workflows/flow/executions",
        json={"parameters": {f"P{i}": "z" * 4000 for i in range(3)}},
    )
    assert status in (200, 201, 202), ex

    async def finished() -> bool:
        s, b = await cluster.request("GET", f"{base}/executions/{ex['id']}")
        return s == 200 and b["status"] in ("succeeded", "failed")

    await wait_for(finished, 120, what="the execution finished")
    status, body = await cluster.request("GET", f"{base}/executions/{ex['id']}")
    assert body["status"] == "succeeded", body
    execs = await etcd.range_all(keys.executions("w"))
    runs = await etcd.range_all(keys.runs("w"))
    used = sum(len(kv.value) for kv in execs.kvs) + sum(len(kv.value) for kv in runs.kvs)
    assert len(runs.kvs) == 3
    counted = await etcd.get(keys.history_size("w", "workflow", "flow"))
    assert counted is not None and 0 < used <= int(counted.value)
