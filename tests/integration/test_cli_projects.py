"""`cronmesh project list|get` (a project's quotas beside what it uses, found missing when the
run-history quota began counting real bytes, D318) and the WAITS ON column of `job list` and
`workflow list` (a job's `depends_on` was visible only in its document)."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_cli_workflow_slots import cli

P = "/api/v1/projects"


@pytest.mark.timeout(90)
async def test_project_get_shows_quotas_beside_usage_and_lists_show_upstreams(cluster):
    await cluster.start()
    url, req = cluster.url(), cluster.request
    status, body = await req("PUT", f"{P}/team", json={"quotas": {"jobs": 4}})
    assert status in (200, 201), body
    up = {"name": "extract", "command": "true", "schedules": [{"cron": "0 * * * *"}]}
    down = {
        "name": "report",
        "command": "true",
        "schedules": [
            {"cron": "0 6 * * *", "depends_on": [{"job": "extract", "window": "same_day"}]}
        ],
    }
    for job in (up, down):
        status, body = await req("PUT", f"{P}/team/jobs/{job['name']}", json=job)
        assert status == 201, body

    code, out, err = await cli(url, "project", "list")
    assert code == 0 and out.split() == ["PROJECT", "team"], (out, err)

    code, out, err = await cli(url, "-p", "team", "project", "get")
    assert code == 0, err
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["jobs"][1:5] == ["2", "4", "50%", "set"], out  # an override for this project
    assert "cluster default" in out.splitlines()[3], out  # workflows: the cluster's default
    assert any(line.startswith("run history") for line in out.splitlines()), out

    code, out, err = await cli(url, "project", "get", "team", "-o", "json")
    assert code == 0, err
    view = json.loads(out)
    assert view["usage"]["jobs"] == 2 and view["quotas"]["jobs"] == 4, view

    code, out, err = await cli(url, "-p", "team", "job", "list")
    assert code == 0, err
    header, *lines = out.splitlines()
    assert "WAITS ON" in header, out
    by_name = {line.split()[0]: line for line in lines}
    waits_at = header.index("WAITS ON")
    assert by_name["report"][waits_at:].split()[0] == "extract", out
    assert by_name["extract"][waits_at:].split()[0] == "-", out
    code, out, err = await cli(url, "project", "get", "nope")
    assert code != 0 and "nope" in err, (out, err)
