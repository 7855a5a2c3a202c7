"""A schedule that never fires, saved in the job form (D507), in a real browser against a real
node: the job is saved and the warning the API answers with is shown as it is, not labelled as
a daylight-saving warning (which only `dst_*` warnings are)."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import make_user


async def test_saving_a_schedule_that_never_fires_warns_as_it_is(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await page.get_by_role("link", name="Jobs", exact=True).click()
    await page.get_by_role("link", name="New job").click()
    await page.get_by_label("Name").fill("leapless")
    await page.get_by_label("Command").fill("true")
    await page.get_by_label("Cron schedule").fill("0 0 30 2 *")
    await page.get_by_role("button", name="Create job").click()
    warning = page.locator("#toast .toast.warn")
    await expect(warning).to_have_count(1)
    await expect(warning).to_contain_text(
        "'0 0 30 2 *' never fires: no date matches all its fields"
    )
    await expect(warning).not_to_contain_text("Daylight saving")
    await expect(page.get_by_role("heading", name="Definition")).to_be_visible()  # saved
    status, job = await cluster.request("GET", "/api/v1/projects/default/jobs/leapless")
    assert status == 200, job
    assert job["schedules"][0]["cron"] == "0 0 30 2 *"
