"""Global options after the command against a live node (D288): `run list -o json` and
`job get NAME -o yaml` (as D12 and D253 document them), and `-p`/`--api` after the command win
over the same option before it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import yaml

from nodes.devtools.embedded import free_port
from tests.api_helpers import JOBS, RUNS
from tests.conftest import ROOT, cli_env, run_cli


async def cli(url: str, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(run_cli, url, *args)


def bare_cli(*args: str) -> tuple[int, str, str]:
    """``cronmesh ARGS…`` with no ``--api`` put in front."""
    res = subprocess.run(
        [sys.executable, "-m", "nodes.cli", *args],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env=cli_env(),
        timeout=30,
    )
    return res.returncode, res.stdout, res.stderr


@pytest.mark.timeout(300)  # a dozen CLI processes: ~1 s of CPU each, 5-10 s at load 15-25
async def test_output_project_and_api_after_the_command(cluster):
    await cluster.start()
    url = cluster.url()
    job = {"name": "report", "command": "true"}
    assert (await cluster.request("POST", JOBS, json=job))[0] == 201
    status, run = await cluster.request("POST", f"{JOBS}/report/runs", json={})
    assert status == 201, run

    code, out, err = await cli(url, "run", "list", "-o", "json")
    assert code == 0, err
    assert run["id"] in [r["id"] for r in json.loads(out)]
    _, api = await cluster.request("GET", f"{RUNS}?job=report")
    assert [r["id"] for r in api["runs"]] == [run["id"]]

    code, out, err = await cli(url, "job", "get", "report", "-o", "yaml")
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert (doc["name"], doc["command"]) == ("report", "true")
    code, out, err = await cli(url, "-o", "json", "job", "get", "report", "-o", "yaml")
    assert code == 0 and not out.startswith("{") and yaml.safe_load(out)["name"] == "report"
    code, out, err = await cli(url, "-o", "yaml", "job", "get", "report", "-o", "json")
    assert code == 0 and json.loads(out)["name"] == "report"

    # -p after the command wins: the job is in `default`, not in `elsewhere`
    code, _, err = await cli(url, "job", "get", "report", "-p", "elsewhere")
    assert code == 1 and "report" in err, err
    code, out, err = await cli(url, "-p", "elsewhere", "job", "get", "report", "-p", "default")
    assert code == 0 and yaml.safe_load(out)["name"] == "report", err

    # --api after the command wins over a dead one before it
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = await asyncio.to_thread(bare_cli, "--api", dead, "run", "list")
    assert code == 1 and err, err
    code, out, err = await asyncio.to_thread(
        bare_cli, "--api", dead, "run", "list", "--job", "report", "--api", url, "-o", "json"
    )
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [run["id"]]
