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
