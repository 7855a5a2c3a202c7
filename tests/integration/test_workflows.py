"""Workflows on one in-process node against a real etcd: DAG order, failure propagation, results
between tasks, rerun from a task, cancel, external reports, flow control, bad documents."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, wait_for

P = "/api/v1/projects/default"
WFS = f"{P}/workflows"
EXECS = f"{P}/executions"
DONE = ("succeeded", "failed", "cancelled")


async def put_wf(cluster, doc):
    status, body = await cluster.request("PUT", f"{WFS}/{doc['name']}", json=doc)
    assert status in (200, 201), body
    return body


async def trigger(cluster, name, **params):
    status, body = await cluster.request(
        "POST", f"{WFS}/{name}/executions", json={"parameters": params}
    )
    assert status == 201, body
    return body["id"]


async def execution(cluster, exec_id):
    status, body = await cluster.request("GET", f"{EXECS}/{exec_id}")
    assert status == 200, body
    return body


async def finished(cluster, exec_id, timeout=30):
    async def done():
        ex = await execution(cluster, exec_id)
        return ex if ex["status"] in DONE else None

    return await wait_for(done, timeout, what=f"execution {exec_id} finished")


def stamp(path: Path, name: str, extra: str = "") -> str:
    """A command that appends its task name to a file (the order tasks ran in)."""
    return f"{extra}echo {name} >> {path}"


async def test_diamond_runs_in_dependency_order_and_passes_results(cluster, tmp_path):
    await cluster.start()
    order = tmp_path / "order"
    seen = tmp_path / "seen"
    doc = {
        "name": "etl",
        "parameters": {"region": "eu"},
        "tasks": [
            {
                "name": "extract",
                "command": stamp(
                    order, "extract", "echo '{\"rows\": 3}' > $CRONMESH_RESULT_FILE; "
                ),
            },
            {"name": "clean", "command": stamp(order, "clean"), "depends_on": ["extract"]},
            {"name": "enrich", "command": stamp(order, "enrich"), "depends_on": ["extract"]},
            {
                "name": "load",
                "command": stamp(
                    order,
                    "load",
                    f'echo "$CRONMESH_RESULT_EXTRACT|$CRONMESH_PARAM_REGION|$CRONMESH_TASK" > {seen}; ',
                ),
            },
        ],
        "edges": [["clean", "load"], ["enrich", "load"]],
    }
    await put_wf(cluster, doc)
    ex = await finished(cluster, await trigger(cluster, "etl"))
    assert ex["status"] == "succeeded", ex
    ran = order.read_text().split()
    assert ran[0] == "extract" and ran[-1] == "load" and sorted(ran[1:3]) == ["clean", "enrich"]
    assert json.loads(seen.read_text().split("|")[0]) == {"rows": 3}
    assert seen.read_text().strip().split("|")[1:] == ["eu", "load"]
    t = ex["tasks"]["extract"]
    assert t["result"] == {"rows": 3} and t["exit_code"] == 0 and t["node"] == "n1"
    assert t["logs"].endswith(f"/runs/{t['run_id']}/logs")
    status, text = await cluster.request("GET", "/metrics")
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["cronmesh_dag_advance_seconds_count"] >= 2  # two advancing writes here
    assert values['cronmesh_workflow_executions_finished_total{status="succeeded"}'] >= 1
    assert values["cronmesh_workflow_tasks_started_total"] >= 4


async def test_failure_marks_downstream_and_rerun_from_failed_task_keeps_upstream(
    cluster, tmp_path
):
    await cluster.start()
    order = tmp_path / "order"
    flag = tmp_path / "fixed"
    doc = {
        "name": "pipe",
        "tasks": [
            {"name": "t1", "command": stamp(order, "t1")},
            {"name": "t2", "command": stamp(order, "t2"), "depends_on": ["t1"]},
            {
                "name": "t3",
                "command": f"echo t3 >> {order}; test -e {flag}",
                "depends_on": ["t2"],
            },
            {"name": "t4", "command": stamp(order, "t4"), "depends_on": ["t3"]},
            {"name": "side", "command": stamp(order, "side"), "depends_on": ["t1"]},
            {
                "name": "cleanup",
                "command": stamp(order, "cleanup"),
                "depends_on": ["t4"],
                "trigger_rule": "all_done",
            },
        ],
    }
    await put_wf(cluster, doc)
    exec_id = await trigger(cluster, "pipe")
    ex = await finished(cluster, exec_id)
    states = {n: t["status"] for n, t in ex["tasks"].items()}
    assert ex["status"] == "failed"
    assert states == {
        "t1": "succeeded",
        "t2": "succeeded",
        "t3": "failed",
        "t4": "upstream_failed",
        "side": "succeeded",
        "cleanup": "succeeded",
    }
    assert ex["failed_tasks"] == ["t3"]
    assert ex["tasks"]["t3"]["exit_code"] == 1
    # Editing the template does not change this execution (it is a snapshot).
    doc["tasks"][0]["command"] = "exit 7"
    await put_wf(cluster, doc)
    flag.write_text("")
    order.write_text("")
    status, body = await cluster.request(
        "POST", f"{EXECS}/{exec_id}/rerun", json={"from_task": "t3"}
    )
    assert status == 200, body
    ex = await finished(cluster, exec_id)
    assert ex["status"] == "succeeded", ex
    assert order.read_text().split() == ["t3", "t4", "cleanup"]
    assert ex["tasks"]["t3"]["previous_runs"] and ex["reruns"] == 1
    status, body = await cluster.request(
        "POST", f"{EXECS}/{exec_id}/rerun", json={"failed_only": True}
    )
    assert status == 409 and body["error"]["field"] == "failed_only"


async def test_failed_only_rerun_and_retries(cluster, tmp_path):
    await cluster.start()
    flag = tmp_path / "ok"
    doc = {
        "name": "flaky",
        "tasks": [
            {"name": "a", "command": "true"},
            {"name": "b", "command": f"test -e {flag}", "depends_on": ["a"]},
            {
                "name": "c",
                "command": f"n=$(cat {tmp_path}/n 2>/dev/null || echo 0); echo $((n+1)) > {tmp_path}/n; test $n -ge 1",
                "retries": 1,
                "retry_interval": 0,
            },
        ],
    }
    await put_wf(cluster, doc)
    exec_id = await trigger(cluster, "flaky")
    ex = await finished(cluster, exec_id)
    assert {n: t["status"] for n, t in ex["tasks"].items()} == {
        "a": "succeeded",
        "b": "failed",
        "c": "succeeded",
    }
    assert ex["tasks"]["c"]["attempt"] == 2
    a_run = ex["tasks"]["a"]["run_id"]
    flag.write_text("")
    status, _ = await cluster.request(
        "POST", f"{EXECS}/{exec_id}/rerun", json={"failed_only": True}
    )
    assert status == 200
    ex = await finished(cluster, exec_id)
    assert ex["status"] == "succeeded" and ex["tasks"]["a"]["run_id"] == a_run


async def test_cancel_stops_running_task_and_starts_nothing_new(cluster, tmp_path):
    await cluster.start()
    started = tmp_path / "started"
    doc = {
        "name": "long",
        "tasks": [
            {"name": "sleepy", "command": f"touch {started}; sleep 60", "kill_grace": 1},
            {"name": "after", "command": f"touch {tmp_path}/after", "depends_on": ["sleepy"]},
        ],
    }
    await put_wf(cluster, doc)
    exec_id = await trigger(cluster, "long")
    await wait_for(started.exists, 20, what="task started")
    status, body = await cluster.request("POST", f"{EXECS}/{exec_id}/cancel")
    assert status == 200, body
    ex = await finished(cluster, exec_id)
    assert ex["status"] == "cancelled"
    assert ex["tasks"]["sleepy"]["status"] == "cancelled"
    assert ex["tasks"]["after"]["status"] == "cancelled"
    assert not (tmp_path / "after").exists()
    status, body = await cluster.request("POST", f"{EXECS}/{exec_id}/cancel")
    assert status == 409


async def test_external_task_completed_by_report(cluster, tmp_path):
    await cluster.start()
    out = tmp_path / "out"
    doc = {
        "name": "approval",
        "tasks": [
            {"name": "ask", "external": True},
            {"name": "go", "command": f"echo $CRONMESH_RESULT_ASK > {out}", "depends_on": ["ask"]},
        ],
    }
    await put_wf(cluster, doc)
    exec_id = await trigger(cluster, "approval")

    async def waiting():
        ex = await execution(cluster, exec_id)
        return (
            ex["tasks"]["ask"]["report_key"] if ex["tasks"]["ask"]["status"] == "waiting" else None
        )

    key = await wait_for(waiting, 20, what="external task waiting")
    status, body = await cluster.request(
        "POST", f"{EXECS}/report/{key}", json={"result": {"approved": True}}
    )
    assert status == 200, body
    ex = await finished(cluster, exec_id)
    assert ex["status"] == "succeeded"
    assert json.loads(out.read_text()) == {"approved": True}
    status, body = await cluster.request("POST", f"{EXECS}/report/{key}", json={})
    assert status == 409
    status, body = await cluster.request("POST", f"{EXECS}/report/nonsense", json={})
    assert status == 400 and body["error"]["field"] == "key"


async def test_max_active_queues_executions_oldest_first(cluster, tmp_path):
    await cluster.start()
    log = tmp_path / "log"
    doc = {
        "name": "serial",
        "max_active": 1,
        "tasks": [
            {
                "name": "only",
                "command": f"echo start $CRONMESH_EXECUTION_ID >> {log}; sleep 0.3; "
                f"echo end $CRONMESH_EXECUTION_ID >> {log}",
            }
        ],
    }
    await put_wf(cluster, doc)
    ids = [await trigger(cluster, "serial") for _ in range(3)]
    for exec_id in ids:
        assert (await finished(cluster, exec_id))["status"] == "succeeded"
    lines = log.read_text().split("\n")[:-1]
    expected = []
    for exec_id in ids:
        expected += [f"start {exec_id}", f"end {exec_id}"]
    assert lines == expected


BAD = [
    (
        {"name": "w", "tasks": [{"name": "a", "command": "x", "depends_on": ["b"]}]},
        "tasks.0.depends_on",
        "unknown task 'b'",
    ),
    (
        {"name": "w", "tasks": [{"name": "a", "command": "x", "depends_on": ["a"]}]},
        "tasks.0.depends_on",
        "depends on itself",
    ),
    (
        {"name": "w", "tasks": [{"name": "a", "command": "x"}, {"name": "a", "command": "y"}]},
        "tasks.1.name",
        "duplicate task name 'a'",
    ),
    (
        {
            "name": "w",
            "tasks": [
                {"name": "a", "command": "x", "depends_on": ["c"]},
                {"name": "b", "command": "x", "depends_on": ["a"]},
                {"name": "c", "command": "x", "depends_on": ["b"]},
            ],
        },
        "tasks",
        "a -> b -> c -> a",
    ),
    ({"name": "w", "tasks": []}, "tasks", "at least 1"),
    ({"name": "w", "tasks": [{"name": "a"}]}, "tasks.0", "exactly one of"),
    (
        {"name": "w", "tasks": [{"name": "a", "command": "x"}], "edges": [["a", "z"]]},
        "edges.0",
        "'z'",
    ),
]


@pytest.mark.parametrize(("doc", "field", "message"), BAD)
async def test_bad_workflows_are_rejected_naming_the_problem(cluster, doc, field, message):
    await cluster.start()
    status, body = await cluster.request("POST", WFS, json=doc)
    assert status == 400, body
    assert body["error"]["field"] == field
    assert message in body["error"]["message"]
    status, body = await cluster.request("GET", WFS)
    assert body["workflows"] == []


@pytest.mark.timeout(300)  # a dozen CLI processes: ~1 s of CPU each, 5-10 s at load 15-25
async def test_cli_apply_trigger_inspect_rerun(cluster, tmp_path):
    await cluster.start()
    flag = tmp_path / "fixed"
    doc = tmp_path / "wf.yaml"
    doc.write_text(
        f"""
name: nightly
parameters: {{day: mon}}
tasks:
  - name: fetch
    command: echo $CRONMESH_PARAM_DAY
  - name: build
    command: test -e {flag}
    depends_on: [fetch]
"""
    )

    async def cli(*args):
        return await asyncio.to_thread(run_cli, cluster.url(), *args)

    code, out, err = await cli("workflow", "apply", "-f", str(doc))
    assert code == 0, err
    assert "nightly applied (2 tasks)" in out
    code, out, _ = await cli("workflow", "list")
    assert out.splitlines()[1].split()[:2] == ["nightly", "2"]
    code, out, err = await cli("workflow", "trigger", "nightly", "--param", "day=tue")
    assert code == 0, err
    exec_id = out.strip()
    ex = await finished(cluster, exec_id)
    assert ex["status"] == "failed" and ex["parameters"] == {"day": "tue"}
    code, out, _ = await cli("execution", "get", exec_id)
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:]}
    assert rows == {"fetch": "succeeded", "build": "failed"}
    code, out, _ = await cli("workflow", "executions", "nightly")
    assert exec_id in out and "failed" in out
    flag.write_text("")
    code, out, err = await cli("execution", "rerun", exec_id, "--failed-only")
    assert code == 0, err
    assert (await finished(cluster, exec_id))["status"] == "succeeded"
    code, _, err = await cli("execution", "rerun", exec_id, "--from-task", "nope")
    assert code == 1 and "unknown task 'nope'" in err and "from_task" in err


async def test_schedule_fires_one_execution_per_tick(cluster, tmp_path):
    await cluster.start()
    doc = {
        "name": "ticker",
        "schedules": [{"cron": "@every 1s", "parameters": {"via": "cron"}}],
        "tasks": [{"name": "t", "command": f"echo $CRONMESH_SCHEDULED_AT >> {tmp_path}/ticks"}],
    }
    await put_wf(cluster, doc)

    async def three():
        status, body = await cluster.request("GET", f"{WFS}/ticker/executions")
        done = [e for e in body["executions"] if e["status"] == "succeeded"]
        return body["executions"] if len(done) >= 3 else None

    execs = await wait_for(three, 30, what="three scheduled executions")
    await cluster.request("PUT", f"{WFS}/ticker", json={**doc, "enabled": False})
    assert {e["source"] for e in execs} <= {"schedule", "catch-up"}
    ex = await execution(cluster, execs[-1]["id"])
    assert ex["parameters"] == {"via": "cron"} and ex["scheduled_at"]
    ticks = (tmp_path / "ticks").read_text().split()
    assert len(ticks) >= 3 and all(t.endswith("Z") for t in ticks)
    assert len(ticks) == len(set(ticks))  # never one tick twice


async def test_finished_executions_are_pruned_with_their_task_runs(cluster, etcd, keys):
    node = await cluster.start()
    doc = {"name": "small", "keep_executions": 2, "tasks": [{"name": "t", "command": "true"}]}
    await put_wf(cluster, doc)
    ids = []
    for _ in range(4):
        ids.append(await trigger(cluster, "small"))
        await finished(cluster, ids[-1])
    first = await execution(cluster, ids[0])
    old_run = first["tasks"]["t"]["run_id"]
    assert node.scheduler is not None
    await node.scheduler.workflows.retention.prune()
    status, body = await cluster.request("GET", f"{WFS}/small/executions")
    assert [e["id"] for e in body["executions"]] == ids[:1:-1]
    status, _ = await cluster.request("GET", f"{EXECS}/{ids[0]}")
    assert status == 404
    assert await etcd.get(keys.run("default", old_run)) is None
    assert await etcd.get(keys.job_run("default", "@small:t", old_run)) is None


async def test_higher_priority_workflow_tasks_are_claimed_first(cluster, tmp_path):
    await cluster.start(capacity=1)
    gate = tmp_path / "gate"
    log = tmp_path / "log"
    await put_wf(
        cluster,
        {
            "name": "blocker",
            "tasks": [{"name": "b", "command": f"while [ ! -e {gate} ]; do sleep 0.05; done"}],
        },
    )
    for name, prio in (("low", -5), ("high", 5), ("mid", 0)):
        await put_wf(
            cluster,
            {
                "name": name,
                "priority": prio,
                "tasks": [{"name": "t", "command": f"echo {name} >> {log}"}],
            },
        )
    blocker = await trigger(cluster, "blocker")

    async def running():
        ex = await execution(cluster, blocker)
        return ex["tasks"]["b"]["status"] == "running"

    await wait_for(running, 20, what="blocker running")
    ids = [await trigger(cluster, name) for name in ("low", "high", "mid")]

    async def queued():
        status, body = await cluster.request("GET", "/api/v1/projects/default/runs?status=pending")
        return len(body["runs"]) == 3

    await wait_for(queued, 20, what="three task runs queued")
    gate.write_text("")
    for exec_id in ids:
        await finished(cluster, exec_id)
    assert log.read_text().split() == ["high", "mid", "low"]


async def test_queued_execution_cancelled_never_runs_and_running_one_refuses_rerun(
    cluster, tmp_path
):
    await cluster.start()
    gate = tmp_path / "gate"
    doc = {
        "name": "one-at-a-time",
        "max_active": 1,
        "tasks": [
            {
                "name": "t",
                "command": f"echo $CRONMESH_EXECUTION_ID >> {tmp_path}/ran; "
                f"while [ ! -e {gate} ]; do sleep 0.05; done",
            }
        ],
    }
    await put_wf(cluster, doc)
    first = await trigger(cluster, "one-at-a-time")
    second = await trigger(cluster, "one-at-a-time")

    async def first_running():
        return (await execution(cluster, first))["tasks"]["t"]["status"] == "running"

    await wait_for(first_running, 20, what="first execution running")
    assert (await execution(cluster, second))["status"] == "queued"
    status, body = await cluster.request("POST", f"{EXECS}/{first}/rerun", json={})
    assert status == 409 and body["error"]["field"] == "execution_id"
    status, _ = await cluster.request("POST", f"{EXECS}/{second}/cancel")
    assert status == 200
    ex = await finished(cluster, second)
    assert ex["status"] == "cancelled" and ex["tasks"]["t"]["status"] == "cancelled"
    gate.write_text("")
    assert (await finished(cluster, first))["status"] == "succeeded"
    assert (tmp_path / "ran").read_text().split() == [first]


async def test_unknown_workflow_execution_and_bad_requests(cluster):
    await cluster.start()
    status, body = await cluster.request("POST", f"{WFS}/nope/executions", json={})
    assert status == 404 and body["error"]["code"] == "workflow_not_found"
    status, body = await cluster.request("GET", f"{EXECS}/123")
    assert status == 404 and body["error"]["code"] == "execution_not_found"
    status, body = await cluster.request("GET", f"{EXECS}/abc")
    assert status == 400 and body["error"]["field"] == "execution"
    await put_wf(cluster, {"name": "w", "tasks": [{"name": "a", "command": "true"}]})
    status, body = await cluster.request(
        "POST", f"{WFS}/w/executions", json={"parameters": {"bad-name": "x"}}
    )
    assert status == 400 and body["error"]["field"] == "parameters"
    status, body = await cluster.request("GET", f"{WFS}/w/executions")
    assert status == 200 and body["executions"] == []  # the rejected trigger created nothing
    exec_id = await trigger(cluster, "w")
    await finished(cluster, exec_id)
    status, body = await cluster.request(
        "POST", f"{EXECS}/{exec_id}/rerun", json={"from_task": "a", "failed_only": True}
    )
    assert status == 400
    status, body = await cluster.request("PUT", f"{WFS}/other", json={"name": "w", "tasks": []})
    assert status == 400 and body["error"]["field"] == "name"
