"""The web UI with a first admin whose password must be changed (issue 19 item 20, D169): the login
form leads to "Choose a new password", and then to the dashboard."""

from __future__ import annotations

from playwright.async_api import expect


async def test_first_login_asks_for_a_new_password(cluster, ui_factory):
    await cluster.start(admin_token=None, admin_password="generated secret", admin_must_change=True)
    ui = await ui_factory(cluster.url())
    page = ui.page
    await page.goto(f"{cluster.url()}/")
    await page.get_by_label("User name").fill("admin")
    await page.get_by_label("Password").fill("generated secret")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    await page.get_by_label("New password", exact=True).fill("mine, at last")
    await page.get_by_label("New password again").fill("mine, not quite")
    await page.get_by_role("button", name="Change password").click()
    await expect(page.locator(".field-error")).to_contain_text(["The two passwords differ."])
    await page.get_by_label("New password again").fill("mine, at last")
    await page.get_by_role("button", name="Change password").click()
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    await ui.shot("first-login-dashboard")
