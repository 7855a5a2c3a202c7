"""Daylight saving in the job form (D223), in a real browser against a real node: the preview
notes a fire time moved by the next spring-forward change of America/New_York (under the job's
own DST policy), and saving a time that change skips shows the warning the API answers with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.async_api import expect

from cluster.cron_zones import transitions
from tests.browser.conftest import make_user

JOBS = "/api/v1/projects/default/jobs"


async def test_the_job_form_notes_and_warns_about_a_dst_gap(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    now = datetime.now(UTC).replace(tzinfo=None)
    ny = ZoneInfo("America/New_York")
    gap = next(t for t in transitions(ny, now, now + timedelta(days=366)) if t.kind == "gap")
    cron = f"30 2 {gap.before.day} {gap.before.month} *"  # only on the spring-forward day
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await page.get_by_role("link", name="Jobs", exact=True).click()
    await page.get_by_role("link", name="New job").click()
    await page.get_by_label("Name").fill("early")
    await page.get_by_label("Command").fill("true")
    await page.get_by_label("Time zone").fill("America/New_York")
    await page.get_by_label("Cron schedule").fill(cron)
    times = page.locator("#cron-preview ol.fire-times li")
    await expect(times).to_have_count(5)
    await expect(times.first.locator(".dst")).to_have_text(
        "clocks go forward: moved to the end of the skipped hour"
    )
    await page.get_by_role("button", name="Create job").click()
    warning = page.locator("#toast .toast.warn")
    await expect(warning).to_have_count(1)
    await expect(warning).to_contain_text("Daylight saving: 02:30 does not exist on ")
    await expect(warning).to_contain_text("in America/New_York")
    await expect(warning).to_contain_text("it runs at 03:00 instead (dst.gap: shift)")
    await expect(page.get_by_role("heading", name="Definition")).to_be_visible()  # saved
    await ui.shot("job-form-dst-warning")
    # the form previews under the job's own policy, and keeps it
    status, body = await cluster.request(
        "PATCH",
        f"{JOBS}/early",
        json={
            "schedules": [{"cron": cron, "timezone": "America/New_York", "dst": {"gap": "skip"}}]
        },
    )
    assert status == 200, body
    await page.evaluate("document.getElementById('toast').replaceChildren()")
    await page.get_by_role("link", name="Edit").click()
    await expect(times).to_have_count(5)
    await expect(times.first.locator(".dst")).to_have_text(
        "clocks went forward before this: the skipped time did not run"
    )
    # a time no transition touches: no note, no warning
    await page.get_by_label("Cron schedule").fill("30 12 * * *")
    await expect(times).to_have_count(5)
    await expect(page.locator("#cron-preview .dst")).to_have_count(0)
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#toast .toast.ok")).to_have_count(1)
    await expect(page.locator("#toast .toast.warn")).to_have_count(0)
    status, job = await cluster.request("GET", f"{JOBS}/early")
    assert status == 200, job
    assert job["schedules"][0]["cron"] == "30 12 * * *"
    assert job["schedules"][0]["dst"] == {"gap": "skip", "fold": "auto"}
