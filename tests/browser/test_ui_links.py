"""Links in notifications (issue #26 point 4, D256): a node with a public URL sends, for a failed
run, an e-mail (to a local SMTP server), a JSON webhook and a Slack message (to local receivers)
that link to the run, and for a failed workflow task also to its execution; each link, opened in
Chromium while logged out, asks for the login and then lands on its page, in its project."""

from __future__ import annotations

import re

from playwright.async_api import expect

from cluster.notify import payload
from nodes.devtools.embedded import free_port
from tests.browser.conftest import PASSWORD, make_user
from tests.conftest import wait_for
from tests.integration.test_notifications import (  # noqa: F401 - smtp_server is a fixture
    Receiver,
    allow_loopback,
    smtp_server,
)

OPS = "/api/v1/projects/ops"


async def _open_logged_out(ui_factory, url: str, user: str = "alice"):
    ui = await ui_factory(url.split("/ui/", 1)[0])
    await ui.page.goto(url)
    await expect(ui.page.get_by_label("User name")).to_be_visible()
    await ui.page.get_by_label("User name").fill(user)
    await ui.page.get_by_label("Password").fill(PASSWORD)
    await ui.page.get_by_role("button", name="Log in").click()
    return ui


async def test_notification_links_land_on_the_run_and_execution_after_login(
    cluster,
    etcd,
    keys,
    ui_factory,
    smtp_server,  # noqa: F811 - the imported fixture
):
    controller, box = smtp_server
    await allow_loopback(etcd, keys)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await cluster.start(
        listen=f"127.0.0.1:{port}",
        public_url=f"{base}/",
        smtp_url=f"smtp://127.0.0.1:{controller.port}?from=cronmesh@example.com",
    )
    await make_user(cluster, "alice", {"*": "admin"})
    status, body = await cluster.request("POST", "/api/v1/projects", json={"name": "ops"})
    assert status == 201, body
    async with Receiver() as hook, Receiver() as slack:
        job = {
            "name": "nightly",
            "command": "exit 2",
            "notifications": [
                {"on": ["failure"], "email": {"to": ["oncall@example.com"]}},
                {"on": ["failure"], "webhook": {"url": hook.url}},
                {"on": ["failure"], "webhook": {"url": slack.url, "format": "slack"}},
            ],
        }
        status, body = await cluster.request("POST", f"{OPS}/jobs", json=job)
        assert status == 201, body
        status, run = await cluster.request("POST", f"{OPS}/jobs/nightly/runs", json={})
        assert status == 201, run
        await wait_for(
            lambda: box.messages and hook.delivered() and slack.delivered(), 60, what="all three"
        )
        run_url = f"{base}/ui/#/runs/{run['id']}?project=ops"
        # the e-mail: a line with the link, as a mail reader shows it (and makes it clickable)
        _, mail = box.messages[0]
        text = mail.get_payload(decode=True).decode()
        assert f"Open the run: {run_url}\r\n" in text, text
        found = re.search(r"Open the run: (\S+)", text)
        assert found is not None
        mailed = found.group(1)
        # the JSON payload: the run's page and its job's
        _, sent = hook.delivered()[0]
        assert set(sent) == set(payload("failure", {**run, "links": {}}, "d")), sent
        assert sent["links"] == {"run": run_url, "job": f"{base}/ui/#/jobs/nightly?project=ops"}
        # Slack: its own link syntax
        _, chat = slack.delivered()[0]
        assert f"<{run_url}|Open the run>" in chat["text"], chat

        # a workflow task's failure, told by the project's default rule: run and execution
        rules = {"rules": [{"on": ["failure"], "webhook": {"url": hook.url}}]}
        status, body = await cluster.request("PUT", f"{OPS}/notifications", json=rules)
        assert status == 200, body
        wf = {
            "name": "etl",
            "tasks": [
                {"name": "extract", "command": "echo x"},
                {"name": "load", "command": "exit 3", "depends_on": ["extract"]},
            ],
        }
        status, body = await cluster.request("POST", f"{OPS}/workflows", json=wf)
        assert status == 201, body
        status, ex = await cluster.request("POST", f"{OPS}/workflows/etl/executions", json={})
        assert status == 201, ex

        def task_payload():
            return next((p for _, p in hook.delivered() if p["job"] == "@etl:load"), None)

        await wait_for(task_payload, 60, what="the task's failure notified")
        task = task_payload()
        exec_url = f"{base}/ui/#/executions/{ex['id']}?task=load&project=ops"
        assert task["links"]["execution"] == exec_url, task
        assert task["links"]["run"] == f"{base}/ui/#/runs/{task['run']['id']}?project=ops"

    # the mailed link, opened logged out in a browser whose project is the default one
    ui = await _open_logged_out(ui_factory, mailed)
    page = ui.page
    await expect(page.get_by_role("heading", name=f"Run {run['id']}")).to_be_visible()
    await expect(page.locator("#run-status")).to_have_text("failed")
    await expect(page.get_by_label("Project")).to_have_value("ops")
    await expect(page).to_have_title(re.compile(rf"^Run {run['id'][:12]}… failed · nightly"))
    # choosing another project in the header wins over the link's
    await page.get_by_label("Project").select_option("default")
    await expect(page).not_to_have_url(re.compile("project=ops"))
    await expect(page.get_by_label("Project")).to_have_value("default")

    # the execution link lands on the execution, its failed task open
    ui = await _open_logged_out(ui_factory, exec_url)
    page = ui.page
    await expect(page.locator(".task-panel h3")).to_contain_text("Task load")
    await expect(page.locator("h1 .badge")).to_have_text("failed")
    await expect(page.get_by_label("Project")).to_have_value("ops")

    # the link's project is only a choice among the reader's own: a viewer of "default" alone
    # stays there, and the run of "ops" is not shown to her
    await make_user(cluster, "vera", {"default": "viewer"})
    ui = await _open_logged_out(ui_factory, mailed, user="vera")
    page = ui.page
    await expect(page.locator("main .error")).to_be_visible()
    await expect(page.get_by_label("Project")).to_have_value("default")
    await expect(page.get_by_role("heading", name=f"Run {run['id']}")).to_have_count(0)
