"""Issue #26 point 9, every page: each has a tab title of its own, the most specific part first
(the pages not covered by test_ui_issue26's titles check)."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import make_user

WORKFLOWS = "/api/v1/projects/default/workflows"


async def test_every_page_has_its_own_title(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    wf = {"name": "etl", "tasks": [{"name": "extract", "command": "true"}]}
    status, body = await cluster.request("POST", WORKFLOWS, json=wf)
    assert status == 201, body
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    titles = {}
    for fragment, title in (
        ("#/", "Dashboard · cronmesh"),
        ("#/jobs", "Jobs · cronmesh"),
        ("#/jobs/new", "New job · Jobs · cronmesh"),
        ("#/runs", "Runs · cronmesh"),
        ("#/workflows", "Workflows · cronmesh"),
        ("#/workflows/etl", "etl · Workflows · cronmesh"),
        ("#/secrets", "Secrets · cronmesh"),
        ("#/plan", "Plan · cronmesh"),
        ("#/machines", "Machines · cronmesh"),
        ("#/users", "Users · cronmesh"),
        ("#/audit", "Audit · cronmesh"),
        ("#/no-such-page", "Not found · cronmesh"),
    ):
        await ui.go(fragment)
        await expect(page).to_have_title(title)
        titles[fragment] = title
    assert len(set(titles.values())) == len(titles)
