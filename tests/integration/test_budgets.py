"""Budgets end to end (issue 24 item 3, D274-D279): the documents and their validation on an
in-process node; enforcement on real `cronmesh node` processes racing through one etcd, observed
from the jobs themselves (each appends its start and end with a timestamp)."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.chaos.harness import wait_ready
from tests.conftest import api_session, run_cli, wait_for

BUDGETS = "/api/v1/budgets"
JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"
WFS = "/api/v1/projects/default/workflows"


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=15), **kw) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


def ledger_job(ledger: Path, hold: str) -> str:
    """Appends ``start <epoch s> <run>``, waits (``hold``: a shell command), appends ``end``."""
    stamp = '"$(date +%s.%N)" "$CRONMESH_RUN_ID"'
    return f"echo start {stamp} >> {ledger}; {hold}; echo end {stamp} >> {ledger}"


def intervals(ledger: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    if ledger.exists():
        for line in ledger.read_text().splitlines():
            phase, ts, run = line.split()
            out.setdefault(run, []).append(float(ts))
    return out


def most_at_once(spans: dict[str, list[float]]) -> int:
    """The most processes alive at one instant (a run's span: its start to its end line)."""
    events = []
    for ts in spans.values():
        events.append((ts[0], 1))
        events.append((ts[1] if len(ts) > 1 else float("inf"), -1))
    now = best = 0
    for _, d in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at a tie
        now += d
        best = max(best, now)
    return best


async def finished(http: aiohttp.ClientSession, base: str, ids: list[str]) -> list[dict[str, Any]]:
    async def all_done() -> list[dict[str, Any]] | None:
        status, body = await call(http, "GET", f"{base}{RUNS}?limit=1000")
        assert status == 200, body
        by_id = {r["id"]: r for r in body["runs"]}
        runs = [by_id.get(i) for i in ids]
        if all(r is not None and r["finished_at"] for r in runs):
            return runs  # type: ignore[return-value]
        return None

    return await wait_for(all_done, 150, interval=0.3, what="runs finished")  # type: ignore[no-any-return]


async def trigger(http: aiohttp.ClientSession, base: str, job: str) -> str:
    status, body = await call(http, "POST", f"{base}{JOBS}/{job}/runs", json={})
    assert status == 201, body
    return str(body["id"])


# -- documents -----------------------------------------------------------------------------------


async def test_budget_documents_validation_and_delete_in_use(cluster):
    node = await cluster.start("n1")
    req = cluster.request
    status, body = await req("PUT", f"{BUDGETS}/api", json={"concurrent": 2})
    assert status == 201, body
    assert body["use"] == {"running": 0, "concurrent": 2}
    doc = {"starts": {"per": "minute", "limit": 10}, "match": {"tags": ["etl"]}}
    status, body = await req("PUT", f"{BUDGETS}/etl", json=doc)
    assert status == 201 and body["use"]["starts"]["count"] == 0, body
    for bad, field in (
        ({}, None),
        ({"concurrent": 0}, "concurrent"),
        ({"starts": {"per": "fortnight", "limit": 1}}, "starts.per"),
        ({"concurrent": 1, "name": "other"}, "name"),
    ):
        status, body = await req("PUT", f"{BUDGETS}/bad", json=bad)
        assert status == 400, (bad, body)
        if field:
            assert body["error"]["field"].startswith(field), body
    status, body = await req("PUT", f"{BUDGETS}/Bad!", json={"concurrent": 1})
    assert status == 400 and body["error"]["field"] == "name"
    status, body = await req("GET", f"{BUDGETS}?limit=1")
    assert status == 200 and [b["name"] for b in body["budgets"]] == ["api"] and body["next"]
    status, body = await req("GET", f"{BUDGETS}?limit=1&after=api")
    assert [b["name"] for b in body["budgets"]] == ["etl"] and body["next"] is None

    # a job naming an unknown budget: 400 naming the field, nothing written
    job = {"command": "true", "budgets": ["api", "nope"]}
    status, body = await req("PUT", f"{JOBS}/j", json=job)
    assert status == 400 and body["error"]["field"] == "budgets.1", body
    assert (await req("GET", f"{JOBS}/j"))[0] == 404
    wf = {"tasks": [{"name": "a", "command": "true", "budgets": ["nope"]}]}
    status, body = await req("PUT", f"{WFS}/w", json=wf)
    assert status == 400 and body["error"]["field"] == "tasks.0.budgets.0", body
    status, _ = await req("PUT", f"{JOBS}/j", json={"command": "true", "budgets": ["api"]})
    assert status == 201
    wf["tasks"][0]["budgets"] = ["etl"]
    status, body = await req("PUT", f"{WFS}/w", json=wf)
    assert status == 201, body
    # deleting a budget in use: 409 naming the users; unused (a tag match is no reference): 204
    status, body = await req("DELETE", f"{BUDGETS}/api")
    assert status == 409 and "job default/j" in body["error"]["message"], body
    status, body = await req("DELETE", f"{BUDGETS}/etl")
    assert status == 409 and "workflow default/w" in body["error"]["message"], body
    assert (await req("DELETE", f"{WFS}/w"))[0] == 204
    assert (await req("DELETE", f"{BUDGETS}/etl"))[0] == 204
    assert (await req("GET", f"{BUDGETS}/etl"))[0] == 404
    status, body = await req("PATCH", f"{JOBS}/j", json={"budgets": ["etl"]})
    assert status == 400 and body["error"]["field"] == "budgets.0", body
    status, body = await req("GET", "/status")
    assert status == 200 and body["budgets"]["budgets"][0]["name"] == "api", body
    assert node.ready


# -- enforcement ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_concurrent_budget_holds_across_racing_nodes(procs, tmp_path):
    """Three nodes, budget ``concurrent: 2`` shared by two jobs (one by name, one by tag): never
    more than two processes alive at once, as the jobs' own timestamps show; every run succeeds;
    a run held back says why, and the gauges show the use."""
    nodes = [procs.start(f"n{i}", "--handoff-delay", "0") for i in range(3)]
    ledger = tmp_path / "ledger"
    async with api_session() as http:
        for n in nodes:
            await wait_ready(http, n)
        base = nodes[0].url
        status, body = await call(
            http, "PUT", f"{base}{BUDGETS}/pool", json={"concurrent": 2, "match": {"tags": ["db"]}}
        )
        assert status == 201, body
        cmd = ledger_job(ledger, "sleep 0.8")
        for job, extra in (("by-name", {"budgets": ["pool"]}), ("by-tag", {"tags": ["db"]})):
            status, body = await call(
                http, "PUT", f"{base}{JOBS}/{job}", json={"command": cmd, **extra}
            )
            assert status == 201, body
        ids = [await trigger(http, base, j) for _ in range(5) for j in ("by-name", "by-tag")]

        async def held_back() -> str | None:
            _, body = await call(http, "GET", f"{base}{RUNS}?limit=100&status=pending")
            return next((r["waiting"] for r in body["runs"] if r.get("waiting")), None)

        reason = await wait_for(held_back, 30, interval=0.1, what="a run held back by the budget")
        assert reason == "budget pool: 2/2 running"

        async def gauge() -> bool:
            async with http.get(f"{nodes[1].url}/metrics") as r:
                text = await r.text()
            return 'cronmesh_budget_in_use{budget="pool"} 2.0' in text

        await wait_for(gauge, 30, interval=0.1, what="in-use gauge at 2")
        runs = await finished(http, base, ids)
        _, pool = await call(http, "GET", f"{base}{BUDGETS}/pool")
    assert [r["status"] for r in runs] == ["succeeded"] * len(ids)
    spans = intervals(ledger)
    assert len(spans) == len(ids) and all(len(s) == 2 for s in spans.values())
    assert most_at_once(spans) == 2  # the budget was used to its limit, never over it
    assert len({r["node"] for r in runs}) >= 2  # the nodes did race for the slots
    assert pool["use"]["running"] == 0  # every slot given back at completion


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_starts_per_window(procs, tmp_path):
    """``starts: {per: 2 (s), limit: 2}``: no aligned 2-second window holds more than two claims
    (each run's ``started_at``), and every run still succeeds: a run over budget waits."""
    nodes = [procs.start(f"n{i}", "--handoff-delay", "0") for i in range(2)]
    async with api_session() as http:
        for n in nodes:
            await wait_ready(http, n)
        base = nodes[0].url
        status, body = await call(
            http, "PUT", f"{base}{BUDGETS}/rate", json={"starts": {"per": 2, "limit": 2}}
        )
        assert status == 201, body
        status, _ = await call(
            http, "PUT", f"{base}{JOBS}/r", json={"command": "true", "budgets": ["rate"]}
        )
        assert status == 201
        t0 = time.time()
        ids = [await trigger(http, base, "r") for _ in range(7)]

        async def held_back() -> str | None:
            _, body = await call(http, "GET", f"{base}{RUNS}?limit=100&status=pending")
            return next((r["waiting"] for r in body["runs"] if r.get("waiting")), None)

        reason = await wait_for(held_back, 30, interval=0.1, what="a run held back")
        assert "2/2 starts per 2s, next start allowed at" in reason
        runs = await finished(http, base, ids)
    assert [r["status"] for r in runs] == ["succeeded"] * 7
    from datetime import datetime

    windows: dict[int, int] = {}
    for r in runs:
        started = datetime.fromisoformat(r["attempts"][0]["started_at"]).timestamp()
        windows[int(started // 2)] = windows.get(int(started // 2), 0) + 1
    assert max(windows.values()) == 2, windows
    assert len(windows) >= 4  # 7 starts need four windows at least
    assert time.time() - t0 >= 4  # and so at least the length of two whole windows


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.node_log_allows("lease", "lost")
async def test_a_killed_node_frees_its_slot_within_the_lease_ttl(procs, tmp_path):
    """``concurrent: 1``: the node holding the slot is killed (SIGKILL); the run waiting for the
    slot starts on the other node within the lease TTL (3 s) plus margin, not never."""
    a = procs.start("holder", "--handoff-delay", "0", "--property", "role=holder")
    b = procs.start("other", "--handoff-delay", "0")
    ledger = tmp_path / "ledger"
    async with api_session() as http:
        for n in (a, b):
            await wait_ready(http, n)
        base = b.url
        await call(http, "PUT", f"{base}{BUDGETS}/one", json={"concurrent": 1})
        status, _ = await call(
            http,
            "PUT",
            f"{base}{JOBS}/hold",
            json={
                "command": ledger_job(ledger, "sleep 600"),
                "budgets": ["one"],
                "target": {"selector": "role=holder"},
            },
        )
        assert status == 201
        first = await trigger(http, base, "hold")
        await wait_for(lambda: first in intervals(ledger), 30, what="first run started")
        status, _ = await call(
            http,
            "PUT",
            f"{base}{JOBS}/next",
            json={"command": ledger_job(ledger, "true"), "budgets": ["one"]},
        )
        second = await trigger(http, base, "next")
        _, run = await call(http, "GET", f"{base}{RUNS}/{second}")
        assert run["status"] == "pending"
        assert run.get("waiting") == "budget one: 1/1 running", run
        killed = time.monotonic()
        a.signal(signal.SIGKILL)
        await wait_for(lambda: second in intervals(ledger), 30, interval=0.05, what="second ran")
        waited = time.monotonic() - killed
        print(f"slot of the killed node free and the waiting run started after {waited:.2f} s")
        runs = await finished(http, base, [first, second])
    assert waited < 3 + 6, waited  # the lease TTL plus a loaded machine's margin
    assert runs[1]["status"] == "succeeded" and runs[1]["node"] == "other"
    assert runs[0]["status"] == "lost" or runs[0]["attempt"] > 1


async def test_workflow_tasks_join_budgets_by_name_and_tag(cluster, tmp_path):
    """Four independent tasks of one workflow (two naming the budget, two by tag) and
    ``concurrent: 1``: they run one at a time, as their own timestamps show, and all succeed."""
    await cluster.start("n1", capacity=16)
    ledger = tmp_path / "ledger"
    status, _ = await cluster.request(
        "PUT", f"{BUDGETS}/solo", json={"concurrent": 1, "match": {"tags": ["solo"]}}
    )
    assert status == 201
    cmd = ledger_job(ledger, "sleep 0.3")
    tasks = [{"name": f"n{i}", "command": cmd, "budgets": ["solo"]} for i in range(2)]
    tasks += [{"name": f"t{i}", "command": cmd, "tags": ["solo"]} for i in range(2)]
    status, body = await cluster.request("PUT", f"{WFS}/w", json={"tasks": tasks})
    assert status == 201, body
    status, body = await cluster.request("POST", f"{WFS}/w/executions", json={})
    assert status == 201, body
    exec_id = body["id"]

    async def done() -> dict[str, Any] | None:
        _, ex = await cluster.request("GET", f"/api/v1/projects/default/executions/{exec_id}")
        return ex if ex["status"] in ("succeeded", "failed", "cancelled") else None

    ex = await wait_for(done, 60, interval=0.1, what="execution finished")
    assert ex["status"] == "succeeded", ex
    spans = intervals(ledger)
    assert len(spans) == 4 and most_at_once(spans) == 1, spans
    order = sorted(spans.values())
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(order)]
    print(f"slot hand-over (a task's last line -> the next task's first): {gaps}")
    assert max(gaps) < 5  # woken by the watch when the slot is deleted, not by a poll


async def test_budget_cli(cluster, tmp_path):
    """``cronmesh budget apply|list|get|delete`` against a node."""
    await cluster.start("n1")
    url = cluster.url()
    (tmp_path / "b.yaml").write_text(
        "name: partner\nconcurrent: 3\nstarts: {per: minute, limit: 10}\n"
        "match: {tags: [partner]}\n---\nname: solo\nconcurrent: 1\nprojects: [default]\n"
    )
    code, out, err = await asyncio.to_thread(
        run_cli, url, "budget", "apply", "-f", str(tmp_path / "b.yaml")
    )
    assert code == 0, err
    assert out.splitlines() == ["budget partner applied", "budget solo applied"]
    code, out, err = await asyncio.to_thread(run_cli, url, "budget", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["BUDGET", "RUNNING", "STARTS", "TAGS", "PROJECTS"]
    assert lines[1].split() == ["partner", "0/3", "0/10", "per", "minute", "partner", "*"]
    assert lines[2].split() == ["solo", "0/1", "-", "-", "default"]
    code, out, err = await asyncio.to_thread(run_cli, url, "-o", "json", "budget", "get", "solo")
    assert code == 0 and json.loads(out)["use"] == {"running": 0, "concurrent": 1}, err
    code, out, err = await asyncio.to_thread(run_cli, url, "budget", "delete", "solo")
    assert (code, out.strip()) == (0, "budget solo deleted"), err
    code, _, err = await asyncio.to_thread(run_cli, url, "budget", "get", "solo")
    assert code != 0 and "not found" in err
