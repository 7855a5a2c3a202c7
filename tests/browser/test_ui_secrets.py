"""The Secrets page in a real browser: an editor sets a value (never shown again), the list shows
names and metadata only, a used secret cannot be deleted, a viewer sees names without actions."""

from __future__ import annotations

from playwright.async_api import expect

from cluster.secretbox import new_key
from tests.browser.conftest import make_user

P = "/api/v1/projects/default"
VALUE = "ui-s3cret-Value-42"


async def test_set_list_and_delete_secrets_in_the_ui(cluster, ui_factory, tmp_path):
    keys = tmp_path / "secrets.key"
    keys.write_text(new_key() + "\n")
    await cluster.start(secrets_key_file=str(keys))
    await make_user(cluster, "eddie", {"default": "editor"})
    await make_user(cluster, "vera", {"default": "viewer"})

    ui = await ui_factory(cluster.url())
    await ui.login("eddie")
    page = ui.page
    await ui.go("#/secrets")
    await expect(page.get_by_role("heading", name="Secrets")).to_be_visible()
    await page.get_by_role("button", name="New secret").click()
    await page.get_by_label("Name").fill("db-password")
    await page.get_by_label("Value").fill(VALUE)
    await page.get_by_role("button", name="Save").click()
    row = page.locator("tr[data-secret=db-password]")
    await expect(row).to_contain_text("eddie")
    assert VALUE not in await page.content()
    status, body = await cluster.request("GET", f"{P}/secrets/db-password")
    assert status == 200 and body["updated_by"] == "eddie"
    await ui.shot("secrets")

    # a job uses it: deleting is refused with the job's name, the row stays
    job = {"name": "uses", "command": "true", "env": {"DB": {"secret": "db-password"}}}
    assert (await cluster.request("PUT", f"{P}/jobs/uses", json=job))[0] == 201
    await row.get_by_role("button", name="Delete").click()
    await page.locator("dialog").get_by_role("button", name="Delete").click()
    await expect(page.locator(".toast.error")).to_contain_text("job uses")
    await expect(row).to_be_visible()

    viewer = await ui_factory(cluster.url())
    await viewer.login("vera")
    await viewer.go("#/secrets")
    vrow = viewer.page.locator("tr[data-secret=db-password]")
    await expect(vrow).to_be_visible()
    await expect(vrow.get_by_role("button")).to_have_count(0)
    await expect(viewer.page.get_by_role("button", name="New secret")).to_have_count(0)

    assert (await cluster.request("DELETE", f"{P}/jobs/uses"))[0] == 204
    await row.get_by_role("button", name="Delete").click()
    await page.locator("dialog").get_by_role("button", name="Delete").click()
    await expect(row).to_have_count(0)
