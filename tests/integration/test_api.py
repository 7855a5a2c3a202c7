"""The HTTP API of one in-process node against a real etcd: jobs, runs, logs, bad input."""

from __future__ import annotations

import asyncio
import io
import json
import os
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from nodes.metrics import REGISTRY
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


async def test_job_crud_roundtrip(cluster):
    await cluster.start()
    job = {
        "name": "hello",
        "command": "echo hi",
        "schedules": [{"cron": "0 3 * * *"}],
        "tags": ["a"],
    }
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body
    assert body["project"] == "default" and body["tags"] == ["a"]
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 409 and body["error"]["code"] == "conflict"
    status, body = await cluster.request("PUT", f"{JOBS}/hello", json={**job, "description": "d"})
    assert status == 200 and body["description"] == "d"
    status, body = await cluster.request("PATCH", f"{JOBS}/hello", json={"enabled": False})
    assert status == 200 and body["enabled"] is False and body["description"] == "d"
    status, body = await cluster.request("GET", JOBS)
    assert [j["name"] for j in body["jobs"]] == ["hello"]
    status, _ = await cluster.request("DELETE", f"{JOBS}/hello")
    assert status == 204
    status, body = await cluster.request("GET", f"{JOBS}/hello")
    assert status == 404 and body["error"]["code"] == "job_not_found"


BAD_JOBS = [
    (b"{not json", "invalid", None),
    (b"[1, 2]", "invalid", None),
    (json.dumps({"name": "x", "command": "true", "colour": "red"}), "invalid", "colour"),
    (json.dumps({"name": "x", "command": "true", "retries": "many"}), "invalid", "retries"),
    (
        json.dumps({"name": "x", "command": "true", "schedules": [{"cron": "*/0 * * * *"}]}),
        "invalid",
        "schedules.0.cron",
    ),
    (
        json.dumps({"name": "x", "command": "true", "schedules": [{"cron": "1 2 3"}]}),
        "invalid",
        "schedules.0.cron",
    ),
    (
        json.dumps(
            {
                "name": "x",
                "command": "true",
                "schedules": [{"cron": "* * * * *", "timezone": "Nowhere/City"}],
            }
        ),
        "invalid",
        "schedules.0.timezone",
    ),
    (json.dumps({"name": "x", "command": "true", "timeout": -5}), "invalid", "timeout"),
    (json.dumps({"name": "x", "command": "x" * 70_000}), "invalid", "command"),
    (json.dumps({"name": "x"}), "invalid", None),
    (json.dumps({"name": "UPPER", "command": "true"}), "invalid", "name"),
    (json.dumps({"name": "x", "command": "true", "priority": 5000}), "invalid", "priority"),
    (
        json.dumps({"name": "x", "command": "true", "schedules": "0 * * * *"}),
        "invalid",
        "schedules",
    ),
]


@pytest.mark.parametrize(("body", "code", "field"), BAD_JOBS)
async def test_bad_job_documents_get_a_4xx_naming_the_field(cluster, body, code, field):
    if not cluster.nodes:
        await cluster.start()
    status, resp = await cluster.request(
        "POST", JOBS, data=body, headers={"Content-Type": "application/json"}
    )
    assert 400 <= status < 500, resp
    assert resp["error"]["code"] == code
    assert resp["error"]["field"] == field
    assert resp["error"]["message"]
    status, resp = await cluster.request("GET", JOBS)
    assert resp["jobs"] == []  # nothing half-written


async def test_other_bad_requests(cluster):
    await cluster.start()
    checks = [
        ("GET", f"{JOBS}/missing", None, 404, "name"),
        ("PATCH", f"{JOBS}/missing", {"enabled": False}, 404, "name"),
        ("DELETE", f"{JOBS}/missing", None, 404, "name"),
        ("POST", f"{JOBS}/missing/runs", {}, 404, "name"),
        ("GET", f"{RUNS}/123", None, 404, "run_id"),
        ("GET", f"{RUNS}/not-an-id", None, 400, "run"),
        ("POST", f"{RUNS}/123/cancel", None, 404, "run_id"),
        ("GET", f"{RUNS}/123/logs", None, 404, "run_id"),
        ("GET", f"{RUNS}?limit=abc", None, 400, "limit"),
        ("GET", f"{RUNS}?status=weird", None, 400, "status"),
        ("GET", "/api/v1/projects/Bad Project/jobs", None, 400, "project"),
        ("GET", "/api/v1/nope", None, 404, None),
        ("DELETE", JOBS, None, 405, None),
    ]
    for method, path, body, want, field in checks:
        status, resp = await cluster.request(method, path, json=body)
        assert status == want, (method, path, resp)
        assert resp["error"]["field"] == field, (method, path, resp)
    await cluster.request("POST", JOBS, json={"name": "j", "command": "true"})
    bad = [
        ("PATCH", f"{JOBS}/j", {"timeout": -1}, "timeout"),
        ("PATCH", f"{JOBS}/j", {"name": "other"}, "name"),
        ("PUT", f"{JOBS}/j", {"name": "k", "command": "true"}, "name"),
        ("POST", f"{JOBS}/j/runs", {"parameters": {"1bad": "x"}}, "parameters"),
        ("POST", f"{JOBS}/j/runs", {"params": {}}, "params"),
        ("POST", f"{JOBS}/j/backfill", {"from": "yesterday", "to": "2026-01-01T00:00:00Z"}, "from"),
        (
            "POST",
            f"{JOBS}/j/backfill",
            {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            None,
        ),
    ]
    for method, path, body, field in bad:
        status, resp = await cluster.request(method, path, json=body)
        assert status == 400, (method, path, resp)
        assert resp["error"]["field"] == field, (method, path, resp)
    status, job = await cluster.request("GET", f"{JOBS}/j")
    assert job["timeout"] == 0  # the rejected patch changed nothing
    _, runs = await cluster.request("GET", f"{RUNS}?job=j")
    assert runs["runs"] == []  # the rejected triggers and backfills created no run
    status, resp = await cluster.request(
        "POST",
        JOBS,
        data=io.BytesIO(b"x" * (2 * 1024 * 1024)),
        headers={"Content-Type": "application/json"},
    )
    assert status == 413 and resp["error"]["code"] == "too_large"


async def test_trigger_runs_with_environment_parameters_and_logs(cluster, tmp_path):
    await cluster.start()
    job = {
        "name": "env",
        "command": "env | grep ^CRONMESH_ | sort; echo oops >&2; printf 'no newline'",
        "parameters": {"day": "today", "who": "me"},
    }
    assert (await cluster.request("POST", JOBS, json=job))[0] == 201
    status, run = await cluster.request(
        "POST", f"{JOBS}/env/runs", json={"parameters": {"day": "monday"}}
    )
    assert status == 201 and run["status"] == "pending" and run["source"] == "manual"
    done = await run_done(cluster, run["id"])
    assert done["status"] == "succeeded" and done["exit_code"] == 0 and done["node"] == "n1"
    assert done["started_at"] and done["finished_at"] and done["attempt"] == 1
    assert done["claim_revision"] > 0
    status, text = await cluster.request("GET", f"{RUNS}/{run['id']}/logs")
    assert status == 200
    assert f"CRONMESH_RUN_ID={run['id']}" in text
    assert "CRONMESH_PARAM_DAY=monday" in text and "CRONMESH_PARAM_WHO=me" in text
    assert "CRONMESH_JOB=env" in text and "CRONMESH_PROJECT=default" in text
    assert "CRONMESH_ATTEMPT=1" in text and "CRONMESH_NODE=n1" in text
    assert "CRONMESH_SCHEDULED_AT=\n" in text.replace("stdout ", "")
    assert f"CRONMESH_CLAIM_REVISION={done['claim_revision']}" in text
    assert " stderr oops" in text and text.rstrip().endswith("no newline")
    status, frames = await cluster.request("GET", f"{RUNS}/{run['id']}/logs?format=json")
    assert {f["stream"] for f in frames["frames"]} == {"stdout", "stderr"}


async def test_failures_retry_with_attempt_history(cluster):
    await cluster.start()
    job = {
        "name": "flaky",
        "command": "exit 3",
        "retries": 2,
        "retry_interval": 0.2,
        "retry_backoff": 2,
    }
    await cluster.request("POST", JOBS, json=job)
    _, run = await cluster.request("POST", f"{JOBS}/flaky/runs", json={})
    done = await run_done(cluster, run["id"], ("failed",))
    assert done["attempt"] == 3 and done["exit_code"] == 3
    assert [a["status"] for a in done["attempts"]] == ["failed"] * 3
    gaps = [(_ts(b["started_at"]) - _ts(a["finished_at"])) for a, b in pairwise(done["attempts"])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # interval, then backoff x2


def _ts(s):
    from datetime import datetime

    return datetime.fromisoformat(s).timestamp()


async def test_result_file_and_python_callable(cluster, tmp_path, monkeypatch):
    mod = tmp_path / "work_mod_cm.py"
    mod.write_text("def compute(a, b=1):\n    print('computing')\n    return {'sum': a + b}\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    await cluster.start()
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "py",
            "python": {"callable": "work_mod_cm:compute", "args": [2], "kwargs": {"b": 5}},
        },
    )
    await cluster.request(
        "POST",
        JOBS,
        json={"name": "res", "command": 'echo \'{"rows": 42}\' > "$CRONMESH_RESULT_FILE"'},
    )
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "big",
            "command": 'head -c 70000 /dev/zero | tr "\\0" a > "$CRONMESH_RESULT_FILE"',
        },
    )
    _, r1 = await cluster.request("POST", f"{JOBS}/py/runs", json={})
    _, r2 = await cluster.request("POST", f"{JOBS}/res/runs", json={})
    _, r3 = await cluster.request("POST", f"{JOBS}/big/runs", json={})
    d1, d2, d3 = [await run_done(cluster, r["id"]) for r in (r1, r2, r3)]
    assert d1["status"] == "succeeded" and d1["result"] == {"sum": 7}
    assert d2["result"] == {"rows": 42}
    assert d3["result"] is None and "larger than" in d3["error"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_timeout_kills_the_whole_process_tree(cluster, tmp_path):
    await cluster.start()
    pids = tmp_path / "pids"
    cmd = f"sh -c 'sleep 300 & echo $! >> {pids}; wait' & echo $! >> {pids}; sleep 300"
    await cluster.request(
        "POST", JOBS, json={"name": "slow", "command": cmd, "timeout": 1, "kill_grace": 1}
    )
    _, run = await cluster.request("POST", f"{JOBS}/slow/runs", json={})
    done = await run_done(cluster, run["id"])
    assert done["status"] == "timed_out"
    found = [int(p) for p in pids.read_text().split()]
    assert len(found) == 2
    await wait_for(lambda: not any(_alive(p) for p in found), 15, what="tree gone")


@pytest.mark.parametrize("action", ["cancel", "abort"])
async def test_cancel_and_abort_a_running_run(cluster, tmp_path, action):
    await cluster.start()
    pidfile = tmp_path / "pid"
    cmd = f"trap '' TERM; sh -c 'sleep 300' & echo $! > {pidfile}; wait"
    await cluster.request("POST", JOBS, json={"name": "stuck", "command": cmd, "kill_grace": 1})
    _, run = await cluster.request("POST", f"{JOBS}/stuck/runs", json={})
    await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, what="started")
    status, _ = await cluster.request("POST", f"{RUNS}/{run['id']}/{action}")
    assert status == 202
    done = await run_done(cluster, run["id"])
    # `cancelled`, the one spelling answers use for the status too (not "canceled")
    assert done["status"] == "cancelled"
    assert done["error"] == {"cancel": "cancelled", "abort": "aborted"}[action] + " by request"
    await wait_for(lambda: not _alive(int(pidfile.read_text())), 15, what="child gone")
    status, resp = await cluster.request("POST", f"{RUNS}/{run['id']}/cancel")
    assert status == 409


async def test_cancel_a_pending_run(cluster):
    await cluster.start(capacity=1)
    await cluster.request(
        "POST",
        JOBS,
        json={"name": "q", "command": "sleep 30", "max_parallel": 1, "overlap": "queue"},
    )
    _, first = await cluster.request("POST", f"{JOBS}/q/runs", json={})
    _, second = await cluster.request("POST", f"{JOBS}/q/runs", json={})
    await wait_for(lambda: _status(cluster, first["id"], "running"), 10, what="first running")
    status, _ = await cluster.request("POST", f"{RUNS}/{second['id']}/cancel")
    assert status == 202
    done = await run_done(cluster, second["id"])
    assert done["status"] == "cancelled" and done["started_at"] is None
    await cluster.request("POST", f"{RUNS}/{first['id']}/abort")
    await run_done(cluster, first["id"])


async def test_deleting_a_job_cancels_its_runs_that_have_not_started(cluster):
    """Found following the docs: a deleted job's pending runs stayed queued (and could start)."""
    await cluster.start(capacity=1)
    body = {"name": "gone", "command": "sleep 30", "max_parallel": 1, "overlap": "queue"}
    await cluster.request("POST", JOBS, json=body)
    _, first = await cluster.request("POST", f"{JOBS}/gone/runs", json={})
    _, second = await cluster.request("POST", f"{JOBS}/gone/runs", json={})
    await wait_for(lambda: _status(cluster, first["id"], "running"), 10, what="first running")
    assert (await cluster.request("DELETE", f"{JOBS}/gone"))[0] == 204
    _, run = await cluster.request("GET", f"{RUNS}/{second['id']}")
    assert run["status"] == "cancelled" and run["started_at"] is None, run
    assert "deleted" in run["error"]
    # the running one ends on its own terms (here: aborted), still listed under the deleted job
    _, running = await cluster.request("GET", f"{RUNS}/{first['id']}")
    assert running["status"] == "running"
    await cluster.request("POST", f"{RUNS}/{first['id']}/abort")
    await run_done(cluster, first["id"])


async def _status(cluster, run_id, want):
    _, run = await cluster.request("GET", f"{RUNS}/{run_id}")
    return run["status"] == want


async def test_schedule_fires_and_ticks_explain(cluster):
    await cluster.start()
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "tick",
            "command": "true",
            "schedules": [{"cron": "* * * * * *", "parameters": {"src": "cron"}}],
        },
    )

    async def fired():
        _, body = await cluster.request("GET", f"{RUNS}?job=tick&status=succeeded")
        return len(body["runs"]) >= 3 and body["runs"]

    runs = await wait_for(fired, 15, what="3 scheduled runs")
    assert all(r["source"] == "schedule" and r["parameters"] == {"src": "cron"} for r in runs)
    ids = [r["id"] for r in runs]
    assert ids == sorted(ids, reverse=True)  # newest first
    assert len({r["scheduled_at"] for r in runs}) == len(runs)
    status, ticks = await cluster.request("GET", f"{JOBS}/tick/ticks")
    assert status == 200
    assert len(ticks["next"]) == 10
    fired_ids = {t["run"] for t in ticks["ticks"] if t["fate"] == "schedule"}
    assert set(ids) <= fired_ids
    # Disable: no more runs; re-enable: the disabled period is reported, not caught up.
    await cluster.request("PATCH", f"{JOBS}/tick", json={"enabled": False})
    _, job = await cluster.request("GET", f"{JOBS}/tick")
    assert job["enabled"] is False


async def test_overlap_forbid_skips_and_never_overlaps(cluster):
    await cluster.start()
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "fb",
            "command": "sleep 1.6",
            "overlap": "forbid",
            "schedules": [{"cron": "* * * * * *"}],
        },
    )

    async def enough():
        _, body = await cluster.request("GET", f"{RUNS}?job=fb&limit=100")
        return (
            body["runs"]
            if sum(r["status"] == "skipped" for r in body["runs"]) >= 2
            and sum(r["status"] == "succeeded" for r in body["runs"]) >= 2
            else None
        )

    runs = await wait_for(enough, 20, what="skips and successes")
    await cluster.request("PATCH", f"{JOBS}/fb", json={"enabled": False})
    ran = sorted((r for r in runs if r["status"] == "succeeded"), key=lambda r: r["started_at"])
    for a, b in pairwise(ran):
        assert b["started_at"] >= a["finished_at"]
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert all("forbid" in r["error"] for r in skipped)


async def test_overlap_queue_runs_one_at_a_time(cluster):
    await cluster.start()
    await cluster.request(
        "POST", JOBS, json={"name": "qq", "command": "sleep 0.3", "overlap": "queue"}
    )
    ids = [(await cluster.request("POST", f"{JOBS}/qq/runs", json={}))[1]["id"] for _ in range(4)]
    runs = [await run_done(cluster, i) for i in ids]
    assert all(r["status"] == "succeeded" for r in runs)
    ordered = sorted(runs, key=lambda r: r["started_at"])
    for a, b in pairwise(ordered):
        assert b["started_at"] >= a["finished_at"]


async def test_max_parallel_bounds_concurrency(cluster, tmp_path):
    await cluster.start()
    await cluster.request(
        "POST", JOBS, json={"name": "mp", "command": "sleep 0.5", "max_parallel": 2}
    )
    ids = [(await cluster.request("POST", f"{JOBS}/mp/runs", json={}))[1]["id"] for _ in range(6)]
    runs = [await run_done(cluster, i) for i in ids]
    events = sorted([(r["started_at"], 1) for r in runs] + [(r["finished_at"], -1) for r in runs])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    assert peak == 2


async def test_overlap_replace_cancels_the_running_one(cluster):
    await cluster.start()
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "rp",
            "command": "sleep 30",
            "overlap": "replace",
            "kill_grace": 1,
            "schedules": [{"cron": "*/2 * * * * *"}],
        },
    )

    async def replaced():
        _, body = await cluster.request("GET", f"{RUNS}?job=rp&status=cancelled")
        return body["runs"]

    cancelled = await wait_for(replaced, 15, what="a replaced run")
    await cluster.request("PATCH", f"{JOBS}/rp", json={"enabled": False})
    assert cancelled[0]["error"]


async def test_backfill_is_idempotent(cluster):
    await cluster.start()
    await cluster.request(
        "POST", JOBS, json={"name": "bf", "command": "true", "schedules": [{"cron": "0 * * * *"}]}
    )
    body = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T05:00:00Z"}
    status, first = await cluster.request("POST", f"{JOBS}/bf/backfill", json=body)
    assert status == 201 and len(first["created"]) == 6 and first["existing"] == 0
    status, second = await cluster.request("POST", f"{JOBS}/bf/backfill", json=body)
    assert status == 200 and second["created"] == [] and second["existing"] == 6
    _, runs = await cluster.request("GET", f"{RUNS}?job=bf&limit=100")
    backfilled = [r for r in runs["runs"] if r["source"] == "backfill"]
    assert sorted(r["scheduled_at"] for r in backfilled) == [
        f"2026-01-01T0{h}:00:00Z" for h in range(6)
    ]
    big = {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    status, resp = await cluster.request("POST", f"{JOBS}/bf/backfill", json=big)
    assert status == 400 and resp["error"]["field"] == "to"


async def test_status_health_and_ready(cluster):
    node = await cluster.start()
    status, body = await cluster.request("GET", "/healthz")
    assert status == 200
    status, body = await cluster.request("GET", "/readyz")
    assert status == 200 and body["ready"] is True
    status, body = await wait_for(lambda: _leader(cluster), 10, what="leader")
    assert body["leader"] == "n1" and body["node"]["id"] == "n1"
    assert [n["id"] for n in body["nodes"]] == ["n1"] and body["nodes"][0]["up"] is True
    assert body["queue_depth"] == 0
    status, text = await cluster.request("GET", "/metrics")
    assert status == 200 and "cronmesh_claims" in text
    assert node.leading


async def _leader(cluster):
    status, body = await cluster.request("GET", "/status")
    return (status, body) if body.get("leader") else None


def test_node_config_precedence(tmp_path: Path):
    from nodes.config_sources import load_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "node_id: from-file\nlisten: 127.0.0.1:9000\ncapacity: 3\netcd: [http://a:1]\n"
    )
    env = {"CRONMESH_LISTEN": "127.0.0.1:9100", "CRONMESH_ETCD": "http://b:1,http://c:2"}
    cfg = load_config({"listen": "127.0.0.1:9200", "node_id": None}, env=env, file=str(cfg_file))
    assert cfg.node_id == "from-file" and cfg.capacity == 3
    assert cfg.etcd == ["http://b:1", "http://c:2"]
    assert cfg.listen == "127.0.0.1:9200"
    from cluster.errors import InvalidInput

    with pytest.raises(InvalidInput) as exc:
        load_config({"listen": "nowhere"}, env={})
    assert exc.value.field == "listen"


def starts_later_than(seconds: float) -> float:
    """Starts this process's nodes counted more than ``seconds`` after their tick (the nodes of
    ``cluster`` run in the test's process and share its metrics registry)."""
    count = REGISTRY.get_sample_value("cronmesh_start_lag_seconds_count") or 0.0
    le = REGISTRY.get_sample_value("cronmesh_start_lag_seconds_bucket", {"le": str(seconds)})
    return count - (le or 0.0)


async def test_downtime_is_caught_up_per_policy_and_explained(cluster):
    """The whole cluster (one node) is down for ~6 s: `all` catches every tick up, `none` reports
    them missed, `latest` runs one; a job disabled meanwhile reports `disabled` ticks."""
    node = await cluster.start()
    every = [{"cron": "* * * * * *"}]
    for name, policy in (("c-all", "all"), ("c-none", "none"), ("c-latest", "latest")):
        job = {"name": name, "command": "true", "catchup": policy, "schedules": every}
        await cluster.request("POST", JOBS, json=job)
    await cluster.request(
        "POST", JOBS, json={"name": "c-off", "command": "true", "schedules": every}
    )

    async def has_runs(job):
        _, body = await cluster.request("GET", f"{RUNS}?job={job}&limit=5")
        return body["runs"]

    for name in ("c-all", "c-none", "c-latest", "c-off"):
        await wait_for(lambda n=name: has_runs(n), 10, what=f"{name} running")
    await cluster.request("PATCH", f"{JOBS}/c-off", json={"enabled": False})
    await cluster.stop(node)
    late_before = starts_later_than(2.0)
    await asyncio.sleep(6)  # the outage itself: what is measured is what happens after it
    await cluster.start("n2")
    await cluster.request("PATCH", f"{JOBS}/c-off", json={"enabled": True})

    async def ticks(job, pred):
        _, body = await cluster.request("GET", f"{JOBS}/{job}/ticks?limit=200")
        return body if pred(body) else None

    caught = await wait_for(
        lambda: ticks("c-all", lambda b: sum(t["fate"] == "catch-up" for t in b["ticks"]) >= 3),
        10,
        what="catch-up runs",
    )
    assert not caught["not_fired"]
    # the caught-up runs' lag is in the start-lag histogram (it hid a lagging leader's ticks)
    await wait_for(
        lambda: starts_later_than(2.0) - late_before >= 3, 10, what="catch-up lags counted"
    )
    missed = await wait_for(lambda: ticks("c-none", lambda b: b["not_fired"]), 10, what="missed")
    assert missed["not_fired"][0]["fate"] == "missed" and missed["not_fired"][0]["count"] >= 3
    assert not any(t["fate"] == "catch-up" for t in missed["ticks"])
    # `latest` runs only the newest due tick (on time at restart, so a plain `schedule` run);
    # everything older is reported missed.
    latest = await wait_for(lambda: ticks("c-latest", lambda b: b["not_fired"]), 10, what="latest")
    assert sum(t["fate"] == "catch-up" for t in latest["ticks"]) <= 1
    assert latest["not_fired"][0]["fate"] == "missed" and latest["not_fired"][0]["count"] >= 3
    # exactly one run for the outage: the tick right after the missed ones (catch-up, or on
    # time at the restart) — never none
    newest = datetime.fromisoformat(latest["not_fired"][0]["last"]) + timedelta(seconds=1)
    ran = [t for t in latest["ticks"] if t["run"] and datetime.fromisoformat(t["tick"]) == newest]
    assert len(ran) == 1 and ran[0]["fate"] in ("catch-up", "schedule"), (newest, latest)
    off = await wait_for(lambda: ticks("c-off", lambda b: b["not_fired"]), 10, what="disabled")
    assert off["not_fired"][0]["fate"] == "disabled" and off["not_fired"][0]["count"] >= 3
    assert not any(t["fate"] == "catch-up" for t in off["ticks"])
    for name in ("c-all", "c-none", "c-latest", "c-off"):
        await cluster.request("PATCH", f"{JOBS}/{name}", json={"enabled": False})


async def test_max_runs_and_one_shot(cluster):
    await cluster.start()
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "few",
            "command": "true",
            "max_runs": 2,
            "schedules": [{"cron": "* * * * * *"}],
        },
    )
    soon = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    await cluster.request(
        "POST",
        JOBS,
        json={"name": "once", "command": "true", "schedules": [{"at": soon.isoformat()}]},
    )

    async def count(job, n):
        _, body = await cluster.request("GET", f"{RUNS}?job={job}")
        return len(body["runs"]) >= n and body["runs"]

    await wait_for(lambda: count("few", 2), 10, what="two runs")
    once = await wait_for(lambda: count("once", 1), 10, what="one-shot")
    assert once[0]["scheduled_at"] == soon.isoformat().replace("+00:00", "Z")
    _, body = await wait_for(
        lambda: _ticks_with(cluster, "few", "max_runs"), 10, what="max_runs reported"
    )
    assert len(await count("few", 2)) == 2
    _, ticks = await cluster.request("GET", f"{JOBS}/once/ticks")
    assert ticks["next"] == []


async def _ticks_with(cluster, job, fate):
    status, body = await cluster.request("GET", f"{JOBS}/{job}/ticks")
    return (status, body) if any(e["fate"] == fate for e in body["not_fired"]) else None


async def test_review_regressions_inputs_that_once_broke_things(cluster):
    await cluster.start()
    bad = [
        (
            "POST",
            JOBS,
            {"name": "x", "command": "true", "starting_deadline": 1e11},
            "starting_deadline",
        ),
        ("POST", "/api/v1/projects/abc%0A/jobs", {"name": "x", "command": "true"}, "project"),
        (
            "POST",
            JOBS,
            {"name": "x", "command": "true", "parameters": {f"p{i}": "v" for i in range(65)}},
            "parameters",
        ),
        (
            "POST",
            JOBS,
            {
                "name": "x",
                "command": "true",
                "description": "d" * 4000,
                "schedules": [
                    {"cron": f"{m} * * * *", "parameters": {f"p{i}": "v" * 4000 for i in range(64)}}
                    for m in (1, 2)
                ],
            },
            None,
        ),
    ]
    for method, path, body, field in bad:
        status, resp = await cluster.request(method, path, json=body)
        assert status == 400, (path, resp)
        assert resp["error"]["field"] == field, resp
    for raw in (b'{"name": "x", "command": "true", "timeout": Infinity}', b"[" * 200_000):
        status, resp = await cluster.request(
            "POST", JOBS, data=raw, headers={"Content-Type": "application/json"}
        )
        assert status == 400, resp
    await cluster.request(
        "POST", JOBS, json={"name": "bf", "command": "true", "schedules": [{"cron": "0 * * * *"}]}
    )
    for body, field in (
        ({"from": "0001-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"}, "to"),
    ):
        status, resp = await cluster.request("POST", f"{JOBS}/bf/backfill", json=body)
        assert status == 400 and resp["error"]["field"] == field, resp
    _, body = await cluster.request("GET", JOBS)
    assert [j["name"] for j in body["jobs"]] == ["bf"]


async def test_same_timing_different_parameters_both_fire_and_replace_does_not_wedge(cluster):
    await cluster.start()
    schedules = [
        {"cron": "* * * * * *", "parameters": {"region": "eu"}},
        {"cron": "* * * * * *", "parameters": {"region": "us"}},
    ]
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "two",
            "command": "sleep 5",
            "overlap": "replace",
            "kill_grace": 0,
            "schedules": schedules,
        },
    )

    async def both():
        _, body = await cluster.request("GET", f"{RUNS}?job=two&limit=100")
        regions = [r["parameters"]["region"] for r in body["runs"]]
        return regions.count("eu") >= 3 and regions.count("us") >= 3

    await wait_for(both, 15, what="both schedules firing repeatedly")

    async def replaced():
        _, body = await cluster.request("GET", f"{RUNS}?job=two&limit=100")
        return body if sum(r["status"] == "cancelled" for r in body["runs"]) >= 2 else None

    body = await wait_for(replaced, 15, what="runs replaced (cancelled) by newer ones")
    await cluster.request("PATCH", f"{JOBS}/two", json={"enabled": False})
    regions = [r["parameters"]["region"] for r in body["runs"]]
    assert regions.count("eu") >= 3 and regions.count("us") >= 3, regions
    # both schedules share one tick per second: each tick ran once per schedule, never twice
    keys = [(r["scheduled_at"], r["parameters"]["region"]) for r in body["runs"]]
    assert len(keys) == len(set(keys)), keys
