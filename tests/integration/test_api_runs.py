"""The HTTP API of one in-process node against a real etcd: run control — manual triggers with
environment, parameters and logs, retries, results, timeouts, cancel/abort, queueing and
max_parallel."""

from __future__ import annotations

import os
from itertools import pairwise

import pytest

from tests.api_helpers import JOBS, RUNS, run_done
from tests.conftest import wait_for


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
