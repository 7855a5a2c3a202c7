"""A run a budget holds back says why on its page (D276)."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import make_user

P = "/api/v1/projects/default"


async def test_a_run_held_back_by_a_budget_says_why(cluster, ui_factory, tmp_path):
    await cluster.start()
    await make_user(cluster, "vera", {"default": "viewer"})
    assert (await cluster.request("PUT", "/api/v1/budgets/one", json={"concurrent": 1}))[0] == 201
    gate = tmp_path / "go"
    job = {"command": f"while [ ! -e {gate} ]; do sleep 0.05; done", "budgets": ["one"]}
    assert (await cluster.request("PUT", f"{P}/jobs/hold", json=job))[0] == 201
    first = (await cluster.request("POST", f"{P}/jobs/hold/runs", json={}))[1]
    second = (await cluster.request("POST", f"{P}/jobs/hold/runs", json={}))[1]
    ui = await ui_factory(cluster.url())
    await ui.login("vera")
    await ui.go(f"#/runs/{second['id']}")
    await expect(ui.page.locator("#run-waiting")).to_have_text("Waiting: budget one: 1/1 running")
    await ui.go(f"#/runs/{first['id']}")
    await expect(ui.page.locator("#run-status")).to_have_text("running")
    await expect(ui.page.locator("#run-waiting")).to_have_count(0)
    gate.touch()
