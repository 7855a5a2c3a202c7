"""A review (High): run records were outside every quota. A record carries its job snapshot, the
request's parameters and a result, a job keeps up to 100,000 runs and a workflow its executions'
task runs, so one editor could keep GBs of run history — past etcd's quota, after which etcd
refuses every write for every project.

D210 counted each job's history at its worst when the job was written; D318 counts what the
records take: every record has a charge written with it, the leader sums them, and runs are
refused while the project is at its ``run_history_bytes`` quota — triggers, backfills, hooks and
workflow executions with a 403, the leader's ticks as skipped runs. Scaled down through config.
"""

from __future__ import annotations

from cluster.history import parse_bytes
from tests.conftest import api_headers, wait_for

BUDGET = 1024 * 1024
FAT_RESULT = (
    'printf \'{"v": "%s"}\' "$(head -c 60000 /dev/zero | tr "\\0" y)" > "$CRONMESH_RESULT_FILE"'
)


async def _editor(cluster) -> str:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": "ed", "roles": {"p": "editor"}}
    )
    assert status == 201, body
    status, body = await cluster.request("POST", "/api/v1/users/ed/tokens", json={})
    assert status == 201, body
    return str(body["token"])


async def _charges(etcd, keys, project: str) -> dict[str, int]:
    res = await etcd.range_all(keys.history_charges(project))
    return {kv.key.rsplit("/", 1)[-1]: parse_bytes(kv.value) for kv in res.kvs}


async def _counted(etcd, keys, project: str) -> int:
    """Wait until the leader's count is the sum of the project's charges; answers it."""

    async def settled() -> int | None:
        charges = sum((await _charges(etcd, keys, project)).values())
        kv = await etcd.get(keys.history_used(project))
        used = parse_bytes(kv.value if kv else None)
        return used if used == charges and used > 0 else None

    return int(await wait_for(settled, 60, what="the leader counted the project's charges"))


async def test_an_editor_cannot_fill_etcd_through_run_history(cluster, etcd, keys):
    await cluster.start(quota_run_history_bytes=BUDGET)
    token = await _editor(cluster)
    base = "/api/v1/projects/p"

    async def call(method: str, path: str, body: object = None) -> tuple[int, dict]:
        async with cluster.http.request(
            method, cluster.url(None, base + path), json=body, headers=api_headers(token)
        ) as resp:
            return resp.status, (await resp.json() if resp.status != 204 else {})

    fat = {
        "name": "fat",
        "command": FAT_RESULT,
        "keep_runs": 100_000,  # what D210 refused at once; the records are what count now
        "parameters": {f"P{i}": "" for i in range(4)},
    }
    status, body = await call("PUT", "/jobs/fat", fat)
    assert status == 201, body
    wf = {"name": "w", "tasks": [{"name": "a", "command": "true"}]}
    assert (await call("PUT", "/workflows/w", wf))[0] == 201

    # the attack: runs with the largest parameters (control characters: stored 6 bytes each)
    # and a 60 KB result, triggered until refused
    params = {f"P{i}": "\x01" * 4000 for i in range(4)}
    accepted = 0
    for _ in range(40):
        await _counted(etcd, keys, "p") if accepted else None
        status, body = await call("POST", "/jobs/fat/runs", {"parameters": params})
        if status == 403:
            break
        assert status in (200, 201, 202), body
        accepted += 1
    else:
        raise AssertionError("the run-history quota never refused")
    assert body["error"]["code"] == "quota_exceeded", body
    assert body["error"]["field"] == "quotas.run_history_bytes", body
    assert 2 <= accepted <= 8, accepted

    # nothing half-written, and what is stored stays within the quota
    runs = await etcd.range_all(keys.runs("p"))
    assert len(runs.kvs) == accepted
    charges = await _charges(etcd, keys, "p")
    assert sum(charges.values()) <= BUDGET
    assert sum(len(kv.value) for kv in runs.kvs) <= sum(charges.values())

    # at the quota (a cluster admin lowers it under the use; the leader's next count sees it),
    # every other way in is refused too: a workflow execution, a backfill…
    status, body = await cluster.request(
        "PUT", base, json={"quotas": {"run_history_bytes": BUDGET // 2}}
    )
    assert status == 200, body
    status, body = await call("POST", "/workflows/w/executions", {})
    assert status == 403 and body["error"]["field"] == "quotas.run_history_bytes", body
    tick = {"name": "tick", "command": "true", "schedules": [{"cron": "* * * * * *"}]}
    assert (await call("PUT", "/jobs/tick", tick))[0] == 201
    status, body = await call(
        "POST",
        "/jobs/tick/backfill",
        {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:05Z"},
    )
    assert status == 403 and body["error"]["field"] == "quotas.run_history_bytes", body

    # …and the leader's ticks: a scheduled job's runs are kept as skipped, with the reason

    async def skipped() -> dict | None:
        s, b = await call("GET", "/runs?job=tick")
        done = [r for r in b.get("runs", []) if r["status"] == "skipped"]
        return done[0] if s == 200 and done else None

    run = await wait_for(skipped, 60, what="a tick skipped at the quota")
    assert "run_history_bytes" in run["error"], run
    # (ticks before the leader's next count ran: the overshoot is one count's interval)
    status, s_runs = await call("GET", "/runs?job=tick")
    later = [r for r in s_runs["runs"] if r["id"] > run["id"]]
    assert all(r["status"] == "skipped" for r in later), s_runs

    # the project shows its use; a cluster admin raising the quota lets runs in again
    status, project = await cluster.request("GET", base)
    assert status == 200 and project["quotas"]["run_history_bytes"] == BUDGET // 2, project
    assert BUDGET // 2 < project["usage"]["run_history_bytes"] <= BUDGET, project
    status, body = await cluster.request(
        "PUT", base, json={"quotas": {"run_history_bytes": 8 * BUDGET}}
    )
    assert status == 200, body
    status, body = await call("POST", "/jobs/fat/runs", {})
    assert status in (200, 201, 202), body


async def test_finished_records_are_charged_what_they_take(cluster, etcd, keys):
    """A run in flight is charged what it may grow to; once finished, exactly its record's bytes
    (a 60 KB result included), so honest history costs what it stores."""
    await cluster.start()
    base = "/api/v1/projects/q"
    job = {"name": "r", "command": FAT_RESULT, "keep_runs": 3}
    status, body = await cluster.request("PUT", f"{base}/jobs/r", json=job)
    assert status == 201, body
    small = {"name": "s", "command": 'echo \'{"ok": 1}\' > "$CRONMESH_RESULT_FILE"'}
    status, body = await cluster.request("PUT", f"{base}/jobs/s", json=small)
    assert status == 201, body
    for name in ("r", "s", "s"):
        status, body = await cluster.request("POST", f"{base}/jobs/{name}/runs", json={})
        assert status in (200, 201, 202), body

    async def settled() -> bool:
        s, b = await cluster.request("GET", f"{base}/runs")
        return s == 200 and len(b["runs"]) == 3 and all(r["finished_at"] for r in b["runs"])

    await wait_for(settled, 120, what="the runs finished")
    runs = await etcd.range_all(keys.runs("q"))
    records = {kv.key.rsplit("/", 1)[-1]: len(kv.value) for kv in runs.kvs}
    assert await _charges(etcd, keys, "q") == records
    assert max(records.values()) > 60_000  # the result is in the record, and charged
    assert min(records.values()) < 4096  # a small run costs a few KiB, not D210's 165 KiB
    assert await _counted(etcd, keys, "q") == sum(records.values())


async def test_reruns_of_one_execution_are_capped(cluster, etcd, keys):
    """A rerun keeps the earlier task runs on the execution: D210's open end. At most
    ``MAX_RERUNS`` per execution; each rerun's task runs are charged like any run."""
    from cluster.history import MAX_RERUNS

    await cluster.start()
    base = "/api/v1/projects/w"
    wf = {"name": "flow", "tasks": [{"name": "a", "command": "true"}]}
    status, body = await cluster.request("PUT", f"{base}/workflows/flow", json=wf)
    assert status == 201, body
    status, ex = await cluster.request("POST", f"{base}/workflows/flow/executions", json={})
    assert status in (200, 201, 202), ex

    async def finished() -> dict | None:
        s, b = await cluster.request("GET", f"{base}/executions/{ex['id']}")
        return b if s == 200 and b["status"] in ("succeeded", "failed") else None

    await wait_for(finished, 60, what="the execution finished")
    # the cap: stored in the record as a long rerun history would have left it
    key = keys.execution("w", ex["id"])
    kv = await etcd.get(key)
    assert kv is not None
    import json

    record = json.loads(kv.value)
    record["reruns"] = MAX_RERUNS
    await etcd.put(key, json.dumps(record))
    status, body = await cluster.request(
        "POST", f"{base}/executions/{ex['id']}/rerun", json={"from_task": "a"}
    )
    assert status == 403, body
    assert body["error"]["field"] == "reruns", body
    status, again = await cluster.request("GET", f"{base}/executions/{ex['id']}")
    assert again["status"] == "succeeded" and again["reruns"] == MAX_RERUNS, again
    # the execution's record and its task run are charged
    charges = await _charges(etcd, keys, "w")
    assert ex["id"] in charges and len(charges) == 2, charges


async def test_a_result_that_grows_when_stored_is_dropped(cluster):
    """A result is measured as stored ("1E15" is stored as 1000000000000000.0): 60 KB read
    would be ~230 KB stored, more than a run in flight was charged, so it is dropped with a
    reason."""
    await cluster.start()
    base = "/api/v1/projects/q"
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
