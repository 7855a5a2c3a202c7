"""The job page in a real browser lists the slots waiting on upstreams and what each waits for
(issue 24 item 1, D295)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playwright.async_api import expect

from tests.browser.conftest import make_user
from tests.conftest import wait_for

P = "/api/v1/projects/default"


async def test_job_page_shows_what_a_waiting_slot_waits_for(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "vera", {"default": "viewer"})
    up = {"name": "feed", "command": "true", "enabled": False, "schedules": [{"cron": "0 * * * *"}]}
    assert (await cluster.request("POST", f"{P}/jobs", json=up))[0] == 201
    when = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    job = {
        "name": "report",
        "command": "true",
        "schedules": [{"at": when, "depends_on": [{"job": "feed"}], "max_wait": "5m"}],
    }
    assert (await cluster.request("POST", f"{P}/jobs", json=job))[0] == 201

    async def waiting():
        _, page = await cluster.request("GET", f"{P}/jobs/report/slots")
        return page["slots"][0] if page["slots"] and page["slots"][0].get("waiting") else None

    slot = await wait_for(waiting, 30, what="a waiting slot")
    ui = await ui_factory(cluster.url())
    await ui.login("vera")
    await ui.go("#/jobs/report")
    card = ui.page.locator("section", has=ui.page.get_by_role("heading", name="Slots"))
    await expect(card.get_by_role("heading", name="Waiting on upstreams")).to_be_visible()
    row = card.locator(f"tr[data-waiting='{slot['name']}']")
    await expect(row).to_contain_text("feed all succeeded")
    await expect(row).to_contain_text("upstream disabled")
