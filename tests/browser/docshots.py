"""The images of docs/ui.md, taken from a real dev cluster (issue #26 "fresh screenshots").

    .venv/bin/python -m tests.browser.docshots            # writes docs/images/*.png
    .venv/bin/python -m tests.browser.docshots --out /tmp/shots --keep   # leave the cluster up

Starts ``cronmesh dev`` (an embedded etcd and three nodes) in a temporary folder, fills it with
what a user would have — jobs in two time zones, a job every 10 s, a failing job, a retried one, a
job that prints fast, one that holds memory and a CPU, a workflow whose task fails and is rerun,
a group with bindings, a secret, a viewer — and shoots each page in Debian's Chromium (1280x860,
the phone at 390x844; Berlin browser time). Stops the cluster at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Page, async_playwright, expect

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, DOC_IMAGES
from tests.conftest import dev_ports

P = "/api/v1/projects/default"
FAST = 'i=0; while [ $i -lt 5000 ]; do i=$((i+1)); echo "line $i"; done'
HOG = (
    "printf 'x = bytearray(96 * 2**20)\\nfor i in range(0, len(x), 4096): x[i] = 1\\n"
    "while True: pass\\n' | python3 -"
)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class Dev:
    """``cronmesh dev`` as a subprocess, with its admin password known."""

    def __init__(self, data: Path) -> None:
        self.port, etcd_port = dev_ports(3)
        self.password = secrets.token_urlsafe(12)
        env = dict(os.environ, CRONMESH_ADMIN_PASSWORD=self.password)
        env.pop("CRONMESH_PUBLIC_URL", None)
        cmd = [sys.executable, "-m", "nodes.cli", "dev", "--nodes", "3", "--port", str(self.port)]
        cmd += ["--etcd-port", str(etcd_port), "--data", str(data)]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not all(_ready(self.port + i) for i in range(3)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the dev cluster did not start (its logs are in --data)")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def __call__(self, method: str, path: str, body: Any = None, ok: int = 200) -> Any:
        async with self.http.request(method, self.base + path, json=body) as resp:
            data = await resp.json() if resp.content_type == "application/json" else None
            if resp.status >= 300 and resp.status != ok:
                raise SystemExit(f"{method} {path}: {resp.status} {data}")
            return data

    async def until(self, path: str, check: Any, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            doc = await self(path=path, method="GET")
            if check(doc):
                return doc
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting on {path}: {doc}")
            await asyncio.sleep(0.5)


async def seed(api: Api, marker: Path) -> dict[str, str]:
    """Jobs, a workflow, a group, a secret, a viewer; returns ids the shots need."""
    jobs = [
        {
            "name": "hello",
            "description": "Says hello every 10 s",
            "command": 'echo "hello $CRONMESH_PARAM_WHO"',
            "schedules": [{"cron": "*/10 * * * * *"}],
            "parameters": {"who": "world"},
            "tags": ["demo"],
        },
        {
            "name": "nightly-report",
            "description": "Builds the report for New York",
            "command": "echo building; sleep 1; echo done",
            "schedules": [{"cron": "0 9 * * 1-5", "timezone": "America/New_York"}],
            "tags": ["reports"],
        },
        {
            "name": "backup",
            "command": "echo 'disk full' >&2; exit 2",
            "schedules": [{"cron": "30 2 * * *", "timezone": "Europe/Berlin"}],
            "tags": ["ops"],
        },
        {"name": "flaky", "command": "exit 1", "retries": 1, "retry_interval": 1},
        {"name": "chatty", "command": FAST, "tags": ["demo"]},
        {
            "name": "slow-import",
            "command": 'for i in $(seq 1 60); do echo "imported batch $i"; sleep 1; done',
        },
        {"name": "hog", "command": HOG, "timeout": 300, "kill_grace": 1},
    ]
    for job in jobs:
        await api("POST", f"{P}/jobs", job, ok=201)
    ids: dict[str, str] = {}
    for name in ("nightly-report", "backup", "flaky", "chatty"):
        ids[name] = (await api("POST", f"{P}/jobs/{name}/runs", {}, ok=201))["id"]
    wf = {
        "name": "etl",
        "description": "Nightly extract, transform, load",
        "tasks": [
            {"name": "extract", "command": "echo extracting; sleep 1"},
            {"name": "transform", "command": f"test -f {marker} && echo 'transformed 120 rows' || {{ echo 'input not ready' >&2; exit 3; }}", "depends_on": ["extract"]},
            {"name": "report", "command": "echo report", "depends_on": ["extract"]},
            {"name": "load", "command": "echo load", "depends_on": ["transform"]},
            {"name": "cleanup", "command": "echo clean", "depends_on": ["load", "report"]},
        ],
    }  # fmt: skip
    await api("POST", f"{P}/workflows", wf, ok=201)
    await api("PUT", "/api/v1/groups/etl", {"name": "etl", "projects": ["default"]}, ok=201)
    for node, weight in (("node-1", 3), ("node-2", 1)):
        body = {"name": node, "node": node, "weight": weight}
        await api("PUT", f"/api/v1/groups/etl/bindings/{node}", body, ok=201)
    await api("PUT", f"{P}/secrets/db-password", {"value": "s3cret-value"}, ok=201)
    viewer = {"name": "vera", "password": "a long viewer password", "roles": {"default": "viewer"}}
    await api("POST", "/api/v1/users", viewer, ok=201)
    for rid in ids.values():
        await api.until(f"{P}/runs/{rid}", lambda r: r["status"] not in ("pending", "running"))
    return ids


async def shoot(page: Page, out: Path, name: str, **kw: Any) -> None:
    await page.screenshot(path=str(out / f"{name}.png"), full_page=True, **kw)
    print(f"  {name}.png")


async def shoot_part(page: Page, part: Any, out: Path, name: str) -> None:
    """One part of the page (by its place: the page re-renders itself every few seconds)."""
    box = await part.bounding_box()
    assert box is not None, name
    await page.screenshot(path=str(out / f"{name}.png"), clip=box, full_page=True)
    print(f"  {name}.png")


async def run(out: Path, keep: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="cronmesh-docshots-") as tmp:
        os.chmod(tmp, 0o755)  # the workflow's task (a uid of its own) looks for its marker here
        data = Path(tmp) / "dev"
        marker = Path(tmp) / "transform-fixed"
        dev = Dev(data)
        try:
            dev.wait()
            await _shots(dev, out, marker)
            if keep:
                print(f"the dev cluster stays up at {dev.url} (admin / {dev.password}); Ctrl-C")
                while dev.proc.poll() is None:
                    await asyncio.sleep(1)
        finally:
            dev.stop()


async def _shots(dev: Dev, out: Path, marker: Path) -> None:
    async with aiohttp.ClientSession() as http:
        login = {"username": "admin", "password": dev.password}
        async with http.post(f"{dev.url}/api/v1/auth/login", json=login) as resp:
            token = (await resp.json())["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        api = Api(http, dev.url)
        print(f"seeding {dev.url} ...")
        ids = await seed(api, marker)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = await browser.new_context(
                viewport={"width": 1280, "height": 860}, timezone_id="Europe/Berlin"
            )
            page = await context.new_page()
            await page.goto(f"{dev.url}/ui/")
            await page.get_by_label("User name").fill("admin")
            await page.get_by_label("Password").fill(dev.password)
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
            await _pages(page, api, dev.url, out, marker, ids)
            phone = await browser.new_context(viewport={"width": 390, "height": 844})
            mobile = await phone.new_page()
            await mobile.goto(f"{dev.url}/ui/")
            await mobile.get_by_label("User name").fill("admin")
            await mobile.get_by_label("Password").fill(dev.password)
            await mobile.get_by_role("button", name="Log in").click()
            await expect(mobile.get_by_role("heading", name="Dashboard")).to_be_visible()
            await _dashboard_filled(mobile)
            await shoot(mobile, out, "dashboard-narrow")
            await browser.close()


async def _dashboard_filled(page: Page) -> None:
    """The dashboard's data has come: the chart's bars and the health card (filled together,
    the health card last) show, instead of a guessed wait."""
    await expect(page.locator("svg.chart rect.bar").first).to_be_visible(timeout=30_000)
    await expect(page.locator("section[aria-labelledby=h-health] .health > *").first).to_be_visible(
        timeout=30_000
    )


async def _pages(
    page: Page, api: Api, base: str, out: Path, marker: Path, ids: dict[str, str]
) -> None:
    async def go(fragment: str, ready: str = "main h1") -> None:
        """Open a page and wait until ``ready`` shows and nothing says "Loading…"."""
        url = f"{base}/ui/{fragment}"
        await page.goto("about:blank")
        await page.goto(url)
        await expect(page.locator(ready).first).to_be_visible(timeout=30_000)
        await expect(page.locator("main .loading")).to_have_count(0)

    # a few ticks of "hello" for the dashboard and the runs list
    await api.until(f"{P}/runs?job=hello", lambda d: len(d["runs"]) >= 2, timeout=60)
    await go("#/", "#h-health, main .card")
    await _dashboard_filled(page)
    await shoot(page, out, "dashboard")
    await go("#/jobs", "tbody tr")
    await shoot(page, out, "jobs")
    await go("#/jobs/new")
    await page.get_by_label("Name", exact=True).fill("weekly-cleanup")
    await page.get_by_label("Command").fill("find /tmp/exports -mtime +7 -delete")
    await page.get_by_label("Time zone").fill("Europe/Berlin")
    await page.get_by_label("Cron schedule").fill("0 6 * * 1")
    await expect(page.locator("#cron-preview li")).to_have_count(5)
    await shoot(page, out, "job-form")
    await go("#/jobs/nightly-report")
    await expect(page.locator("ol.fire-times li").first).to_be_visible()
    await shoot(page, out, "job-zones")
    await go(f"#/runs/{ids['backup']}")
    await expect(page.locator("pre.log")).to_contain_text("disk full")
    await shoot(page, out, "run")
    await go(f"#/runs/{ids['chatty']}")
    await expect(page.locator(".log-state")).to_have_text("5000 line(s)")
    await shoot(page, out, "run-log-fast")
    live = await api("POST", f"{P}/jobs/slow-import/runs", {}, ok=201)
    await go(f"#/runs/{live['id']}")
    await expect(page.locator(".log-state")).to_have_text("live")
    await expect(page.locator("pre.log span").nth(3)).to_be_visible(timeout=30_000)
    await shoot(page, out, "run-live")
    await api("POST", f"{P}/runs/{live['id']}/cancel", ok=202)
    await go("#/runs", "tbody tr")
    await shoot(page, out, "runs")
    await go("#/runs?q=hel&status=succeeded&limit=10", "tbody tr")
    await shoot(page, out, "runs-history")

    # the workflow: fails at transform, then fixed and rerun from it
    ex = await api("POST", f"{P}/workflows/etl/executions", {}, ok=201)
    await api.until(f"{P}/executions/{ex['id']}", lambda e: e["status"] == "failed")
    await go(f"#/executions/{ex['id']}?task=transform")
    await expect(page.locator(".task-panel h3")).to_contain_text("Task transform")
    await shoot(page, out, "execution-failed")
    await asyncio.to_thread(marker.write_text, "ok")
    await api("POST", f"{P}/executions/{ex['id']}/rerun", {"from_task": "transform"}, ok=202)
    await api.until(f"{P}/executions/{ex['id']}", lambda e: e["status"] == "succeeded")
    await go(f"#/executions/{ex['id']}")
    await expect(page.locator("h1 .badge")).to_have_text("succeeded")
    await shoot(page, out, "execution")
    await go(f"#/executions/{ex['id']}?task=transform")
    await expect(page.locator(".task-panel .tries li")).to_have_count(1)
    await shoot(page, out, "execution-tries")
    again = await api("POST", f"{P}/workflows/etl/executions", {}, ok=201)
    await api.until(f"{P}/executions/{again['id']}", lambda e: e["status"] == "succeeded")
    await go("#/workflows/etl", "svg.dag g.task")
    grid = page.locator("section", has=page.locator("#h-grid"))
    await expect(grid.locator("tbody tr").first.locator("a.cell")).to_have_count(2)
    await shoot_part(
        page, page.locator("section", has=page.locator("#h-graph")), out, "workflow-graph"
    )
    await shoot_part(page, grid, out, "workflow-grid")
    await go("#/workflows", "tbody tr")
    await shoot(page, out, "workflows")
    await go("#/secrets", "tbody tr")
    await shoot(page, out, "secrets")

    # machines: at rest, then one node running a job that holds memory and a CPU
    await go("#/machines", "tr[data-node] .runs-cpu")
    await shoot(page, out, "machines")
    hog = await api("POST", f"{P}/jobs/hog/runs", {}, ok=201)
    await api.until(
        "/api/v1/nodes",
        lambda d: any(((n.get("load") or {}).get("runs_memory") or 0) > 80 * 2**20 for n in d["nodes"]),
    )  # fmt: skip
    await go("#/machines", "tr[data-node] .runs-cpu")
    held = page.locator(".runs-memory", has_text=re.compile(r"^([89]\d|\d{3,4})(\.\d)? MiB$|GiB$"))
    await expect(held).to_have_count(1, timeout=30_000)
    await shoot(page, out, "machines-load")
    await api("POST", f"{P}/runs/{hog['id']}/cancel", ok=202)
    await go("#/users", "tbody tr")
    await shoot(page, out, "users")
    await go("#/audit", "tbody tr")
    await shoot(page, out, "audit")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DOC_IMAGES), help="folder of the images (docs/images)")
    ap.add_argument("--keep", action="store_true", help="leave the dev cluster up afterwards")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    asyncio.run(run(Path(args.out), args.keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
