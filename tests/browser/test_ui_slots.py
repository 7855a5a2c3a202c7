"""The job page in a real browser shows its slots: "ran N of the last M slots" and the late or
missed ones with their reason (issue 21 item 1, D233)."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import make_user
from tests.conftest import wait_for

P = "/api/v1/projects/default"


async def test_job_page_shows_ran_n_of_m_and_missed_slots(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "vera", {"default": "viewer"})
    job = {
        "name": "stranded",
        "command": "true",
        "schedules": [{"cron": "*/2 * * * * *"}],
        "target": {"selector": "role=nowhere"},  # never starts: every slot misses its deadline
        "deadlines": {"start_within": 1},
    }
    assert (await cluster.request("POST", f"{P}/jobs", json=job))[0] == 201

    async def two_missed():
        _, page = await cluster.request("GET", f"{P}/jobs/stranded/slots")
        return page if len(page["late"]) >= 2 else None

    await wait_for(two_missed, 30, what="two missed slots")
    await cluster.request("PATCH", f"{P}/jobs/stranded", json={"enabled": False})
    _, page = await cluster.request("GET", f"{P}/jobs/stranded/slots")

    ui = await ui_factory(cluster.url())
    await ui.login("vera")
    await ui.go("#/jobs/stranded")
    card = ui.page.locator("section", has=ui.page.get_by_role("heading", name="Slots"))
    summary = card.locator(".slot-summary")
    await expect(summary).to_contain_text("Ran 0 of the last")
    await expect(summary).to_contain_text("deadline missed")
    first = page["late"][0]
    row = card.locator(f"tr[data-slot='{first['name']}']")
    await expect(row).to_contain_text("deadline missed")
    await expect(row).to_contain_text("not started within 1 s")
    await expect(row.get_by_role("link", name=first["run"])).to_be_visible()
    definition = ui.page.locator("dl.props")
    await expect(definition).to_contain_text("start within 1 s")
    await ui.shot("job-slots")


async def test_deadlines_are_set_in_the_job_form_and_bad_ones_named(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "eddie", {"default": "editor"})
    job = {"name": "nightly", "command": "true", "schedules": [{"cron": "0 6 * * *"}]}
    assert (await cluster.request("POST", f"{P}/jobs", json=job))[0] == 201
    ui = await ui_factory(cluster.url())
    await ui.login("eddie")
    page = ui.page
    await ui.go("#/jobs/nightly/edit")
    await page.get_by_label("Start within").fill("soon")
    await page.get_by_role("button", name="Save").click()
    box = page.locator(".field[data-field=start_within]")
    await expect(box.locator(".field-error")).to_contain_text("is not a duration")
    await expect(box.locator("input")).to_have_attribute("aria-invalid", "true")
    _, stored = await cluster.request("GET", f"{P}/jobs/nightly")
    assert stored["deadlines"] is None  # the refused document changed nothing
    await page.get_by_label("Start within").fill("2m")
    await page.get_by_label("Succeed within").fill("3600")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("dl.props")).to_contain_text(
        "start within 120 s, succeed within 3600 s"
    )
    _, stored = await cluster.request("GET", f"{P}/jobs/nightly")
    assert stored["deadlines"] == {"start_within": 120, "succeed_within": 3600}
    # clearing both removes them
    await page.get_by_role("link", name="Edit").click()
    await expect(page.get_by_label("Start within")).to_have_value("120")
    await page.get_by_label("Start within").fill("")
    await page.get_by_label("Succeed within").fill("")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("dl.props")).to_contain_text("Deadlines")
    await wait_for(lambda: _deadlines_cleared(cluster), 10, what="deadlines cleared by the form")


async def _deadlines_cleared(cluster) -> bool:
    _, stored = await cluster.request("GET", f"{P}/jobs/nightly")
    return stored["deadlines"] is None
