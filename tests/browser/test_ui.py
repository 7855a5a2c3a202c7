"""The web UI in a real browser (Debian's Chromium through Playwright) against a real node and
etcd: log in, what a viewer is not offered, the job form with its live cron preview, triggering a
run and reading its log, cancelling a long run, a failed workflow task rerun from the graph,
draining a node, and a screenshot of each main page."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import expect

from tests.browser.conftest import make_user
from tests.conftest import wait_for

JOBS = "/api/v1/projects/default/jobs"
WORKFLOWS = "/api/v1/projects/default/workflows"


async def test_login_dashboard_and_viewer_is_not_offered_changes(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    await make_user(cluster, "vera", {"default": "viewer"})
    job = {"name": "report", "command": "echo report", "schedules": [{"cron": "0 3 * * *"}]}
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body
    status, run = await cluster.request("POST", f"{JOBS}/report/runs", json={})
    assert status == 201, run

    ui = await ui_factory(cluster.url())
    # a wrong password is refused on the form, then the right one gets in
    await ui.page.goto(f"{cluster.url()}/")
    await ui.page.get_by_label("User name").fill("alice")
    await ui.page.get_by_label("Password").fill("not the password")
    await ui.page.get_by_role("button", name="Log in").click()
    await expect(ui.page.get_by_role("alert")).to_contain_text("invalid user name or password")
    await ui.login("alice")
    page = ui.page
    await expect(page.get_by_role("heading", name="Cluster health")).to_be_visible()
    await expect(page.locator(".stat", has_text="Nodes up")).to_contain_text("1 / 1")
    await expect(page.locator(".stat", has_text="Leader")).to_contain_text("n1")
    await expect(page.locator("svg.chart rect.bar.st-succeeded")).to_have_count(1)
    await expect(page.locator("section", has_text="Next due")).to_contain_text("report")
    await expect(page.get_by_role("link", name="Users")).to_be_visible()
    await ui.shot("dashboard")

    viewer = await ui_factory(cluster.url())
    await viewer.login("vera")
    await expect(viewer.page.get_by_role("link", name="Users")).to_be_hidden()
    await viewer.go("#/jobs")
    row = viewer.page.locator("tr[data-job=report]")
    await expect(row).to_contain_text("0 3 * * *")
    await expect(row.get_by_role("button")).to_have_count(0)
    await expect(viewer.page.get_by_role("link", name="New job")).to_have_count(0)
    await viewer.go("#/jobs/report")
    await expect(viewer.page.get_by_role("heading", name="Definition")).to_be_visible()
    await expect(viewer.page.get_by_role("button", name="Run now")).to_have_count(0)
    await expect(viewer.page.get_by_role("button", name="Delete")).to_have_count(0)
    await viewer.go("#/machines")
    await expect(viewer.page.locator("tr[data-node=n1]")).to_contain_text("up")
    await expect(viewer.page.get_by_role("button", name="Drain")).to_have_count(0)
    # logging out ends the session: the API answers 401 and the UI asks for a login again
    await viewer.page.get_by_role("button", name="Log out").click()
    await expect(viewer.page.get_by_label("User name")).to_be_visible()
    await viewer.go("#/jobs")
    await expect(viewer.page.get_by_label("User name")).to_be_visible()
