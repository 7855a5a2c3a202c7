"""The daemon's own logs: JSON lines with node, job and run bound wherever a run is concerned."""

from __future__ import annotations

import io
import json
import logging

import structlog
from structlog.testing import capture_logs

from nodes.runtime.logsetup import configure
from tests.api_helpers import JOBS, run_done
from tests.conftest import api_session, wait_for


async def test_run_lines_carry_run_job_and_node(cluster):
    await cluster.start("logger-1")
    await cluster.request("POST", JOBS, json={"name": "echo", "command": "echo hi"})
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        _, run = await cluster.request("POST", f"{JOBS}/echo/runs", json={})
        await run_done(cluster, run["id"])
        await wait_for(
            lambda: any(e["event"] == "run finished" for e in logs), 10, what="run finished line"
        )
    about_run = [e for e in logs if e.get("run") == run["id"]]
    assert about_run, logs
    for entry in about_run:
        assert entry["job"] == "default/echo" and entry["node"] == "logger-1", entry
    finished = next(e for e in logs if e["event"] == "run finished")
    assert finished["status"] == "succeeded" and finished["exit_code"] == 0


def test_json_lines_also_for_standard_library_loggers():
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure("json", stream=out)
        with structlog.contextvars.bound_contextvars(node="n9", run="42", job="p/j"):
            structlog.get_logger("nodes.worker").info("run finished", status="failed")
        logging.getLogger("aiohttp.server").error("a library complains")
        try:
            raise ValueError("boom")
        except ValueError:
            structlog.get_logger("x").exception("it broke")
    finally:
        structlog.reset_defaults()
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3
    assert lines[0] | {"timestamp": None} == {
        "event": "run finished",
        "status": "failed",
        "node": "n9",
        "run": "42",
        "job": "p/j",
        "level": "info",
        "timestamp": None,
    }
    assert lines[1]["event"] == "a library complains" and lines[1]["level"] == "error"
    assert lines[1]["logger"] == "aiohttp.server"
    assert "ValueError: boom" in lines[2]["exception"]


def test_console_output_when_asked():
    out = io.StringIO()
    try:
        configure("console", stream=out)
        structlog.get_logger("x").info("hello", run="7")
    finally:
        structlog.reset_defaults()
        root = logging.getLogger()
        for h in list(root.handlers):
            if getattr(h, "_cronmesh", False):
                root.removeHandler(h)
    text = out.getvalue()
    assert "hello" in text and "run=7" in text
    assert not text.lstrip().startswith("{")


async def test_a_node_process_writes_only_json_lines(procs):
    node = procs.start("json-node")
    async with api_session() as http:

        async def ready():
            async with http.get(f"{node.url}/readyz") as resp:
                return resp.status == 200

        await wait_for(ready, 30, what="node ready")
        async with http.post(f"{node.url}{JOBS}", json={"name": "j", "command": "exit 2"}) as r:
            assert r.status == 201
        async with http.post(f"{node.url}{JOBS}/j/runs", json={}) as r:
            run = await r.json()

        async def finished():
            async with http.get(f"{node.url}/api/v1/projects/default/runs/{run['id']}") as r:
                return (await r.json())["status"] == "failed"

        await wait_for(finished, 30, what="run failed")

    def finished_line():
        lines = [json.loads(x) for x in node.log_path.read_text().splitlines() if x.strip()]
        return [e for e in lines if e.get("event") == "run finished" and e.get("run") == run["id"]]

    entry = (await wait_for(finished_line, 10, what="run finished logged"))[0]
    assert entry["node"] == "json-node" and entry["job"] == "default/j"
    assert entry["level"] == "info" and entry["exit_code"] == 2
