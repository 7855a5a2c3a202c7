"""Issue #22 item 7 against a live node (D253, D254): undeclared trigger parameters are refused
or warned about by the API (so the UI and API callers get it too) and the CLI shows it; the
other spelling `canceled` is accepted on input; a document prints as YAML by default."""

from __future__ import annotations

import asyncio

import yaml

from tests.api_helpers import JOBS, RUNS, run_done
from tests.conftest import run_cli

WFS = "/api/v1/projects/default/workflows"


async def cli(url: str, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(run_cli, url, *args)


async def test_undeclared_parameters_refused_when_declared_else_warned(cluster):
    await cluster.start()
    url = cluster.url()
    job = {"name": "report", "command": "true", "parameters": {"day": "today"}}
    assert (await cluster.request("POST", JOBS, json=job))[0] == 201
    status, body = await cluster.request(
        "POST", f"{JOBS}/report/runs", json={"parameters": {"dya": "monday"}}
    )
    assert status == 400, body
    assert (
        body["error"]["field"] == "parameters.dya" and "declares: day" in body["error"]["message"]
    )
    code, out, err = await cli(url, "job", "trigger", "report", "--param", "dya=monday")
    assert code == 1 and out == ""
    assert "no parameter 'dya'" in err and "(field: parameters.dya)" in err
    _, runs = await cluster.request("GET", f"{RUNS}?job=report")
    assert runs["runs"] == []  # nothing written
    code, out, err = await cli(url, "job", "trigger", "report", "--param", "day=monday")
    assert code == 0 and out.strip().isdigit() and "warning" not in err

    # a job that declares none: the run is made, the answer and the CLI warn
    await cluster.request("POST", JOBS, json={"name": "loose", "command": "true"})
    status, run = await cluster.request(
        "POST", f"{JOBS}/loose/runs", json={"parameters": {"who": "me"}}
    )
    assert status == 201 and run["parameters"] == {"who": "me"}
    assert run["warnings"] == [
        {
            "field": "parameters.who",
            "message": "job loose declares no parameters; passed anyway as CRONMESH_PARAM_WHO",
        }
    ]
    status, plain = await cluster.request("POST", f"{JOBS}/loose/runs", json={})
    assert status == 201 and "warnings" not in plain
    code, out, err = await cli(url, "job", "trigger", "loose", "--param", "who=me")
    assert code == 0 and out.strip().isdigit()
    assert "warning: job default/loose parameters.who: job loose declares no parameters" in err

    # workflows: the same rule (the workflow's, its schedules' and its tasks' parameters)
    wf = {"name": "w", "tasks": [{"name": "a", "command": "true", "parameters": {"region": "eu"}}]}
    assert (await cluster.request("PUT", f"{WFS}/w", json=wf))[0] == 201
    status, body = await cluster.request(
        "POST", f"{WFS}/w/executions", json={"parameters": {"regoin": "us"}}
    )
    assert (status, body["error"]["field"]) == (400, "parameters.regoin")
    status, ex = await cluster.request(
        "POST", f"{WFS}/w/executions", json={"parameters": {"region": "us"}}
    )
    assert status == 201 and "warnings" not in ex


async def test_canceled_is_accepted_for_cancelled(cluster):
    await cluster.start()
    await cluster.request("POST", JOBS, json={"name": "slow", "command": "sleep 30"})
    _, run = await cluster.request("POST", f"{JOBS}/slow/runs", json={})
    await cluster.request("POST", f"{RUNS}/{run['id']}/abort")
    done = await run_done(cluster, run["id"])
    assert done["status"] == "cancelled"
    for spelling in ("cancelled", "canceled"):
        status, body = await cluster.request("GET", f"{RUNS}?status={spelling}")
        assert status == 200 and [r["id"] for r in body["runs"]] == [run["id"]], spelling
    code, out, err = await cli(cluster.url(), "run", "list", "--status", "canceled")
    assert code == 0, err
    assert run["id"] in out and " cancelled " in out
    status, body = await cluster.request("GET", f"{RUNS}?status=cancel")
    assert (status, body["error"]["field"]) == (400, "status")


async def test_a_document_prints_as_yaml_by_default(cluster):
    await cluster.start("n1")
    url = cluster.url()
    assert (await cluster.request("PUT", "/api/v1/groups/etl", json={}))[0] == 201
    for argv in (("group", "get", "etl"), ("nodes", "get", "n1"), ("settings", "webhooks")):
        code, out, err = await cli(url, *argv)
        assert code == 0, err
        assert not out.startswith("{") and isinstance(yaml.safe_load(out), dict), argv
        code, out, _ = await cli(url, "-o", "json", *argv)
        assert out.startswith("{"), argv
    code, out, _ = await cli(url, "nodes", "list")
    assert out.splitlines()[0].split()[:3] == ["NODE", "UP", "STATE"]  # a list: a table
