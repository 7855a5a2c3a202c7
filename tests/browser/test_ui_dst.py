"""The job form shows the DST warnings of a saved schedule (D223), in a real browser against a
real node: a daily 02:30 in New York does not exist on the spring-forward day of the coming
year."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import make_user

JOBS = "/api/v1/projects/default/jobs"


async def test_saving_a_job_in_a_dst_gap_shows_the_warning(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await page.get_by_role("link", name="Jobs", exact=True).click()
    await page.get_by_role("link", name="New job").click()
    await page.get_by_label("Name").fill("early")
    await page.get_by_label("Command").fill("true")
    await page.get_by_label("Time zone").fill("America/New_York")
    await page.get_by_label("Cron schedule").fill("30 2 * * *")
    await expect(page.locator("#cron-preview ol.fire-times li")).to_have_count(5)
    await page.get_by_role("button", name="Create job").click()
    warning = page.locator("#toast .toast.warn")
    await expect(warning).to_have_count(1)
    await expect(warning).to_contain_text("Daylight saving: 02:30 does not exist on ")
    await expect(warning).to_contain_text("in America/New_York")
    await expect(warning).to_contain_text("it runs at 03:00 instead (dst.gap: shift)")
    await expect(page.get_by_role("heading", name="Definition")).to_be_visible()  # saved
    await ui.shot("job-form-dst-warning")
    # a time no transition touches: no warning
    await page.get_by_role("link", name="Edit").click()
    await page.get_by_label("Cron schedule").fill("30 12 * * *")
    await expect(page.locator("#cron-preview ol.fire-times li")).to_have_count(5)
    await page.evaluate("document.getElementById('toast').replaceChildren()")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#toast .toast.ok")).to_have_count(1)
    await expect(page.locator("#toast .toast.warn")).to_have_count(0)
    status, job = await cluster.request("GET", f"{JOBS}/early")
    assert status == 200 and job["schedules"][0]["cron"] == "30 12 * * *", job
