"""The freeze banner and the Plan page (heatmap of starts per minute, crowded seconds, slots
with their outcome) in a real browser (issue 21, D239, D240)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playwright.async_api import expect

from tests.browser.conftest import make_user

P = "/api/v1/projects/default"


async def test_freeze_banner_and_plan_heatmap(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "vera", {"default": "viewer"})
    for i in range(6):  # six jobs at the top of every hour on group-less workers: crowded
        doc = {"name": f"hourly-{i}", "command": "true", "schedules": [{"cron": "0 * * * *"}]}
        assert (await cluster.request("PUT", f"{P}/jobs/hourly-{i}", json=doc))[0] == 201
    soon = datetime.now(UTC) + timedelta(hours=2)
    window = {
        "start": soon.replace(minute=0, second=0, microsecond=0).isoformat(),
        "end": (
            soon.replace(minute=0, second=0, microsecond=0) + timedelta(minutes=30)
        ).isoformat(),
        "jobs": ["hourly-0"],
    }
    assert (await cluster.request("PUT", f"{P}/blackouts/pause", json=window))[0] == 201
    note = "release <b>4.2</b>"
    assert (await cluster.request("PUT", "/api/v1/freeze", json={"note": note}))[0] == 200

    ui = await ui_factory(cluster.url())
    await ui.login("vera")
    page = ui.page
    banner = page.locator("#frozen")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("release <b>4.2</b>")  # as text, never as markup
    assert await page.locator("#frozen b").count() == 0

    assert (await cluster.request("DELETE", "/api/v1/freeze"))[0] == 200
    await page.get_by_role("link", name="Plan").click()
    await expect(page.get_by_role("heading", name="Plan")).to_be_visible()
    await expect(banner).to_be_hidden()
    await expect(page.locator(".heat-row[data-group='*']")).to_be_visible()
    assert await page.locator(".heat[data-count]").count() >= 5  # the hours in six hours
    await expect(page.locator("#plan-warnings")).to_contain_text("6 jobs start at")
    await expect(page.locator("#plan-warnings")).to_contain_text("H")
    await expect(page.locator("tr[data-outcome=skipped_blackout]")).to_have_count(1)
    await ui.shot("plan")


async def test_job_page_marks_next_fire_times_a_calendar_skips(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "vera", {"default": "viewer"})
    today = datetime.now(UTC).date()
    days = [(today + timedelta(days=i)).isoformat() for i in range(3)]
    assert (await cluster.request("PUT", f"{P}/calendars/soon", json={"dates": days}))[0] == 201
    doc = {
        "name": "noon",
        "command": "true",
        "schedules": [{"cron": "0 12 * * *", "calendar": {"skip": ["soon"]}}],
    }
    assert (await cluster.request("PUT", f"{P}/jobs/noon", json=doc))[0] == 201
    ui = await ui_factory(cluster.url())
    await ui.login("vera")
    await ui.go("#/jobs/noon")
    page = ui.page
    skipped = page.locator("ol.fire-times li[data-outcome=skipped_calendar]")
    await expect(skipped.first).to_contain_text("skipped_calendar")
    assert await skipped.count() in (2, 3)  # today's noon may be past
    await expect(page.locator("ol.fire-times li[data-outcome=fire]").first).to_be_visible()
