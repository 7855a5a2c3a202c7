"""The web UI in a real browser (Debian's Chromium through Playwright) against a real node and
etcd: log in, what a viewer is not offered, the job form with its live cron preview, triggering a
run and reading its log, cancelling a long run, a failed workflow task rerun from the graph,
draining a node, and a screenshot of each main page."""

from __future__ import annotations

import re
import sys

import aiohttp
import pytest
from playwright.async_api import expect

from tests.browser.conftest import make_user
from tests.conftest import wait_for

JOBS = "/api/v1/projects/default/jobs"
WORKFLOWS = "/api/v1/projects/default/workflows"


async def test_login_dashboard_and_viewer_is_not_offered_changes(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    await make_user(cluster, "vera", {"default": "viewer"})
    job = {"name": "report", "command": "echo report", "schedules": [{"cron": "0 3 * * *"}]}
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body
    status, run = await cluster.request("POST", f"{JOBS}/report/runs", json={})
    assert status == 201, run

    ui = await ui_factory(cluster.url())
    # a wrong password is refused on the form, then the right one gets in
    await ui.page.goto(f"{cluster.url()}/")
    await ui.page.get_by_label("User name").fill("alice")
    await ui.page.get_by_label("Password").fill("not the password")
    await ui.page.get_by_role("button", name="Log in").click()
    await expect(ui.page.get_by_role("alert")).to_contain_text("invalid user name or password")
    await ui.login("alice")
    page = ui.page
    await expect(page.get_by_role("heading", name="Cluster health")).to_be_visible()
    await expect(page.locator(".stat", has_text="Nodes up")).to_contain_text("1 / 1")
    await expect(page.locator(".stat", has_text="Leader")).to_contain_text("n1")
    await expect(page.locator(".stat", has_text="Spool backlog")).to_contain_text(" files, ")
    await expect(page.locator("svg.chart rect.bar.st-succeeded")).to_have_count(1)
    await expect(page.locator("section", has_text="Next due")).to_contain_text("report")
    await expect(page.get_by_role("link", name="Users")).to_be_visible()
    await page.get_by_role("button", name="7d").click()
    await expect(page.get_by_role("button", name="7d")).to_have_attribute("aria-pressed", "true")
    await expect(page.get_by_role("img", name="Runs by status, last 7d")).to_be_visible()
    await expect(page.locator("svg.chart rect.bar.st-succeeded")).to_have_count(1)
    await page.get_by_role("button", name="24h").click()
    await expect(page.get_by_role("img", name="Runs by status, last 24h")).to_be_visible()
    await ui.shot("dashboard")

    viewer = await ui_factory(cluster.url())
    await viewer.login("vera")
    await expect(viewer.page.get_by_role("link", name="Users")).to_be_hidden()
    await viewer.go("#/jobs")
    row = viewer.page.locator("tr[data-job=report]")
    await expect(row).to_contain_text("0 3 * * *")
    await expect(row.get_by_role("button")).to_have_count(0)
    await expect(viewer.page.get_by_role("link", name="New job")).to_have_count(0)
    await viewer.go("#/jobs/report")
    await expect(viewer.page.get_by_role("heading", name="Definition")).to_be_visible()
    await expect(viewer.page.get_by_role("button", name="Run now")).to_have_count(0)
    await expect(viewer.page.get_by_role("button", name="Delete")).to_have_count(0)
    await viewer.go("#/machines")
    await expect(viewer.page.locator("tr[data-node=n1]")).to_contain_text("up")
    await expect(viewer.page.get_by_role("button", name="Drain")).to_have_count(0)
    # logging out ends the session: the API answers 401 and the UI asks for a login again
    await viewer.page.get_by_role("button", name="Log out").click()
    await expect(viewer.page.get_by_label("User name")).to_be_visible()
    await viewer.go("#/jobs")
    await expect(viewer.page.get_by_label("User name")).to_be_visible()


async def test_create_a_job_in_the_form_trigger_it_and_read_its_log(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await page.get_by_role("link", name="Jobs", exact=True).click()
    await page.get_by_role("link", name="New job").click()
    await page.get_by_label("Name").fill("greet")
    # the cron field validates as one types: a bad expression shows the parser's error inline
    cron = page.get_by_label("Cron schedule")
    await cron.fill("61 * * * *")
    await expect(cron).to_have_attribute("aria-invalid", "true")
    error = page.locator(".field[data-field=cron] .field-error")
    await expect(error).to_contain_text("minute")
    await page.get_by_label("Time zone").fill("Mars/Olympus")
    await cron.fill("30 9 * * 1-5")
    await expect(page.locator(".field[data-field=timezone] .field-error")).to_contain_text(
        "unknown time zone"
    )
    await page.get_by_label("Time zone").fill("Asia/Kolkata")
    times = page.locator("#cron-preview ol.fire-times li")
    await expect(times).to_have_count(5)
    await expect(error).to_have_text("")
    first = await times.first.inner_text()
    assert re.search(r" 09:30:00 GMT\+5:30$", first), first  # shown in the schedule's time zone
    # a script file's text becomes the command
    await page.get_by_label("Script file").set_input_files(
        files=[
            {"name": "run.sh", "mimeType": "text/x-sh", "buffer": b"#!/bin/sh\necho from-file\n"}
        ]
    )
    await expect(page.get_by_label("Command")).to_have_value("#!/bin/sh\necho from-file\n")
    await page.get_by_label("Command").fill(
        "echo hello from $CRONMESH_PARAM_GREETING; echo warn-line >&2"
    )
    await page.get_by_label("Tags").fill("demo, ui")
    await ui.shot("job-form")
    await page.get_by_role("button", name="Create job").click()
    await expect(page.get_by_role("heading", name="Definition")).to_be_visible()
    status, job = await cluster.request("GET", f"{JOBS}/greet")
    assert status == 200, job
    assert job["schedules"][0]["cron"] == "30 9 * * 1-5"
    assert job["schedules"][0]["timezone"] == "Asia/Kolkata"
    assert job["tags"] == ["demo", "ui"]
    # edit: the form starts from the stored job and keeps what it does not show
    status, _ = await cluster.request("PATCH", f"{JOBS}/greet", json={"priority": 7})
    assert status == 200
    await page.get_by_role("link", name="Edit").click()
    await expect(page.get_by_label("Name")).to_have_value("greet")
    await page.get_by_label("Cron schedule").fill("@hourly")
    await expect(times).to_have_count(5)
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("heading", name="Definition")).to_be_visible()
    _, job = await cluster.request("GET", f"{JOBS}/greet")
    assert job["schedules"][0]["cron"] == "@hourly"
    assert job["schedules"][0]["timezone"] == "Asia/Kolkata"
    assert job["priority"] == 7 and job["tags"] == ["demo", "ui"]

    # trigger with a parameter; the run page shows it finish and its log, streams told apart
    await page.get_by_role("button", name="Run now").click()
    await page.get_by_label("Parameters").fill("GREETING=browser")
    await page.get_by_role("dialog").get_by_role("button", name="Run now").click()
    await expect(page.locator("#run-status")).to_have_text("succeeded")
    await expect(page.locator("#run-exit")).to_have_text("0")
    await expect(page.locator("pre.log .stdout")).to_contain_text("hello from browser")
    await expect(page.locator("pre.log .stderr")).to_contain_text("warn-line")
    lines = (await page.locator("pre.log").inner_text()).splitlines()
    assert "hello from browser" in lines and "warn-line" in lines, lines
    await expect(page.locator(".log-state")).to_have_text("2 line(s)")
    await ui.shot("run")
    # a run that printed nothing says so (it has no log object, D132)
    status, _ = await cluster.request(
        "PUT", f"{JOBS}/quiet", json={"name": "quiet", "command": "true"}
    )
    assert status == 201
    status, quiet = await cluster.request("POST", f"{JOBS}/quiet/runs", json={})
    assert status == 201, quiet
    await page.goto(f"{cluster.url()}/#/runs/{quiet['id']}")
    await expect(page.locator("#run-status")).to_have_text("succeeded")
    await expect(page.locator(".log-state")).to_have_text("no output")
    await expect(page.locator("pre.log")).to_have_text("")

    await page.get_by_role("link", name="Jobs", exact=True).click()
    await expect(page.locator("tr[data-job=greet]")).to_contain_text("succeeded")
    await page.get_by_placeholder("Search name, command, description").fill("nothing-like-it")
    await expect(page.locator("tr[data-job=greet]")).to_have_count(0)
    await page.get_by_placeholder("Search name, command, description").fill("hello")
    await expect(page.locator("tr[data-job=greet]")).to_have_count(1)
    await ui.shot("jobs")
    # disable from the list, then delete from the job page with a confirmation
    await page.locator("tr[data-job=greet]").get_by_role("button", name="Disable").click()
    await expect(
        page.locator("tr[data-job=greet]").get_by_role("button", name="Enable")
    ).to_be_visible()
    _, job = await cluster.request("GET", f"{JOBS}/greet")
    assert job["enabled"] is False
    await page.get_by_role("link", name="greet").click()
    await page.get_by_role("button", name="Delete").click()
    await page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    assert (await cluster.request("GET", f"{JOBS}/greet"))[0] == 200
    await page.get_by_role("button", name="Delete").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    assert (await cluster.request("GET", f"{JOBS}/greet"))[0] == 404


async def test_cancel_a_long_run_while_its_log_streams(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "olga", {"default": "operator"})
    job = {"name": "long", "command": "echo started; sleep 120", "kill_grace": 2}
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body
    ui = await ui_factory(cluster.url())
    await ui.login("olga")
    page = ui.page
    await ui.go("#/jobs/long")
    await expect(page.get_by_role("button", name="Edit")).to_have_count(0)  # operator: no edits
    await page.get_by_role("button", name="Run now").click()
    await page.get_by_role("dialog").get_by_role("button", name="Run now").click()
    await expect(page.locator("#run-status")).to_have_text("running")
    await expect(page.locator("pre.log .stdout")).to_contain_text("started")  # live, mid-run
    await expect(page.locator(".log-state")).to_have_text("live")  # Server-Sent Events, no polling
    await ui.shot("run-live")
    await page.get_by_role("button", name="Cancel").click()
    await expect(page.locator("#run-status")).to_have_text("cancelled")
    await expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    await page.get_by_role("link", name="Runs", exact=True).click()
    await page.get_by_label("Status").select_option("cancelled")
    await expect(page.locator("tbody tr")).to_have_count(1)
    await ui.shot("runs")


async def test_a_failed_workflow_task_is_shown_and_rerun_from_it(cluster, ui_factory, tmp_path):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    marker = tmp_path / "fixed"
    wf = {
        "name": "etl",
        "tasks": [
            {"name": "extract", "command": "echo extracted"},
            {"name": "transform", "command": f"echo transforming; test -f {marker} || exit 3"},
            {"name": "audit", "command": "echo audited", "depends_on": ["extract"]},
            {"name": "load", "command": "echo loaded", "depends_on": ["transform", "audit"]},
        ],
        "edges": [["extract", "transform"]],
    }
    status, body = await cluster.request("POST", WORKFLOWS, json=wf)
    assert status == 201, body
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await page.get_by_role("link", name="Workflows").click()
    await page.get_by_role("link", name="etl").click()
    await expect(page.locator("svg.dag g.task")).to_have_count(4)
    await page.get_by_role("button", name="Run now").click()
    # the execution page: the graph coloured by state, updating live
    await expect(page.locator("g[data-task=transform]")).to_have_attribute("data-state", "failed")
    await expect(page.locator("g[data-task=extract]")).to_have_attribute("data-state", "succeeded")
    await expect(page.locator("g[data-task=audit]")).to_have_attribute("data-state", "succeeded")
    await expect(page.locator("g[data-task=load]")).to_have_attribute(
        "data-state", "upstream_failed"
    )
    await expect(page.locator("h1 .badge")).to_have_text("failed")
    # layered by longest path: extract | transform, audit | load
    xs = {}
    for name in ("extract", "transform", "audit", "load"):
        box = await page.locator(f"g[data-task={name}]").bounding_box()
        xs[name] = box["x"]
    assert xs["extract"] < xs["transform"] == xs["audit"] < xs["load"], xs
    # click the failed task: its details and its log
    await page.locator("g[data-task=transform]").click()
    await expect(page.locator(".task-panel")).to_contain_text("Exit code")
    await expect(page.locator(".task-panel pre.log")).to_contain_text("transforming")
    await expect(page.locator(".task-panel dl")).to_contain_text("3")
    await expect(page.locator("svg.timeline rect.bar")).to_have_count(3)
    await ui.shot("execution-failed")
    marker.write_text("ok")
    await page.get_by_role("button", name="Rerun from transform").click()
    await page.get_by_role("dialog").get_by_role("button", name="Rerun").click()
    await expect(page.locator("g[data-task=load]")).to_have_attribute("data-state", "succeeded")
    await expect(page.locator("g[data-task=transform]")).to_have_attribute(
        "data-state", "succeeded"
    )
    await expect(page.locator("h1 .badge")).to_have_text("succeeded")
    await page.locator("g[data-task=load]").focus()  # tasks are buttons for the keyboard too
    await page.keyboard.press("Enter")
    await expect(page.locator(".task-panel h3")).to_contain_text("Task load")
    await expect(page.locator(".task-panel pre.log")).to_contain_text("loaded")
    await ui.shot("execution")
    await page.get_by_role("link", name="Workflows").click()
    await expect(page.locator("tr[data-execution]")).to_have_count(1)
    await ui.shot("workflows")


async def test_drain_a_node_and_edit_group_bindings_from_the_machines_page(cluster, ui_factory):
    await cluster.start("n1")
    await cluster.start("n2")
    await make_user(cluster, "alice", {"*": "admin"})
    status, body = await cluster.request("PUT", "/api/v1/groups/gpu", json={"name": "gpu"})
    assert status == 201, body
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await page.get_by_role("link", name="Machines").click()
    n2 = page.locator("tr[data-node=n2]")
    await expect(n2.locator(".node-state")).to_have_text("enabled")
    await n2.get_by_role("button", name="Drain").click()
    await expect(n2.locator(".node-state")).to_have_text(re.compile("drain"))
    _, doc = await cluster.request("GET", "/api/v1/nodes/n2")
    assert doc["state"] in ("draining", "drained") and doc["enabled"] is False
    # bind n1 to the group with weight 3, then change the weight to 5
    group = page.locator("div[data-group=gpu]")
    await group.get_by_label("Node").select_option("n1")
    await group.get_by_label("Weight").fill("3")
    await group.get_by_role("button", name="Add binding").click()
    binding = group.locator("tr[data-binding=n1]")
    await expect(binding.get_by_label("Weight of n1")).to_have_value("3")
    await binding.get_by_label("Weight of n1").fill("5")
    await binding.get_by_role("button", name="Save").click()

    async def weight_is_5():
        _, g = await cluster.request("GET", "/api/v1/groups/gpu")
        return [b["weight"] for b in g["bindings"]] == [5]

    await wait_for(weight_is_5, 20, what="binding weight 5")
    await ui.shot("machines")
    await n2.get_by_role("button", name="Enable").click()
    await expect(n2.locator(".node-state")).to_have_text("enabled")


async def test_users_tokens_audit_and_a_narrow_screen(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await page.get_by_role("link", name="Users").click()
    await page.get_by_role("button", name="New user").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Name").fill("bob")
    await dialog.get_by_label("Password").fill("bob's long password")
    await dialog.get_by_label("Roles").fill("default=editor")
    await dialog.get_by_role("button", name="Create").click()
    row = page.locator("tr[data-user=bob]")
    await expect(row).to_contain_text("default=editor")
    await row.get_by_role("button", name="Roles").click()
    await page.get_by_role("dialog").get_by_label("Roles").fill("default=operator\nops=viewer")
    await page.get_by_role("dialog").get_by_role("button", name="Save").click()
    await expect(row).to_contain_text("ops=viewer")
    _, bob = await cluster.request("GET", "/api/v1/users/bob")
    assert bob["roles"] == {"default": "operator", "ops": "viewer"}
    await row.get_by_role("button", name="Tokens").click()
    await page.get_by_role("button", name="New token").click()
    await page.get_by_role("dialog").get_by_label("Description").fill("ci")
    await page.get_by_role("dialog").get_by_role("button", name="Create").click()
    secret = await page.locator(".secret code").inner_text()
    assert secret
    async with aiohttp.ClientSession() as http:  # the new token works on its own
        url = cluster.url(None, "/api/v1/auth/me")
        async with http.get(url, headers={"Authorization": f"Bearer {secret}"}) as resp:
            assert resp.status == 200 and (await resp.json())["user"]["name"] == "bob"
    await ui.shot("users")
    await page.get_by_role("link", name="Audit").click()
    await expect(page.locator("tbody tr", has_text="POST /api/v1/users").first).to_contain_text(
        "alice"
    )
    await ui.shot("audit")

    phone = await ui_factory(cluster.url(), width=390, height=844)
    await phone.login("alice")
    await expect(phone.page.get_by_role("link", name="Jobs", exact=True)).to_be_hidden()
    await phone.page.get_by_role("button", name="Menu").click()
    await expect(phone.page.get_by_role("link", name="Jobs", exact=True)).to_be_visible()
    width = await phone.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone: {width}px"
    await phone.page.get_by_role("button", name="Menu").click()
    await phone.shot("dashboard-narrow")


async def test_pure_drawing_logic_in_the_browser(cluster, ui_factory):
    """The layered DAG layout and the run bucketing, run as the browser runs them."""
    await cluster.start()
    ui = await ui_factory(cluster.url())
    await ui.go("")
    layout = await ui.page.evaluate(
        """async () => {
            const m = await import('/ui/js/dag.js');
            const deps = m.dependencies({tasks: [
                {name: 'a'}, {name: 'b', depends_on: ['a']}, {name: 'c', depends_on: ['a']},
                {name: 'd', depends_on: ['b']}, {name: 'e', depends_on: ['d', 'c']}, {name: 'f'}],
                edges: [['f', 'c']]});
            return m.layout(deps);
        }"""
    )
    assert layout["layers"] == [["a", "f"], ["b", "c"], ["d"], ["e"]]  # longest path, not shortest
    assert layout["pos"]["e"] == {"x": 3, "y": 0}
    buckets = await ui.page.evaluate(
        """async () => {
            const m = await import('/ui/js/chart.js');
            const now = Date.parse('2026-01-02T00:00:00Z');
            const runs = [
                {status: 'succeeded', finished_at: '2026-01-01T23:30:00Z'},
                {status: 'failed', finished_at: '2026-01-01T23:59:00Z'},
                {status: 'failed', finished_at: '2026-01-01T00:30:00Z'},
                {status: 'running', created_at: '2026-01-01T23:00:00Z'},
                {status: 'skipped', created_at: '2026-01-01T12:10:00Z'},
                {status: 'failed', finished_at: '2025-12-31T23:00:00Z'},
            ];
            return m.bucketRuns(runs, now, 24 * 3600e3, 24).map(b => b.counts);
        }"""
    )
    assert len(buckets) == 24
    assert buckets[23]["succeeded"] == 1 and buckets[23]["failed"] == 1
    assert buckets[0]["failed"] == 1 and buckets[12]["skipped"] == 1
    assert sum(sum(b.values()) for b in buckets) == 4  # running and too-old runs are not counted


async def test_run_page_shows_usage_and_an_out_of_memory_kill(cluster, ui_factory):
    node = await cluster.start()
    if "memory" not in node.containment.layout.limits:
        pytest.skip(f"no memory limit on this machine: {node.containment.layout.reason}")
    await make_user(cluster, "alice", {"*": "admin"})
    grab = "x = []\nwhile True: x.append(bytearray(4 << 20))\n"
    job = {
        "name": "greedy",
        "command": f"{sys.executable} -c '{grab}'",
        "resources": {"memory": "40Mi", "pids": 20},
    }
    status, _ = await cluster.request("PUT", f"{JOBS}/greedy", json=job)
    assert status == 201
    status, run = await cluster.request("POST", f"{JOBS}/greedy/runs", json={})
    assert status == 201, run
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await page.goto(f"{cluster.url()}/#/runs/{run['id']}")
    await expect(page.locator("#run-status")).to_have_text("failed")
    await expect(page.locator("#run-reason")).to_have_text("killed by the out-of-memory killer")
    row = page.locator("#run-attempts tbody tr")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("out of memory")
    await expect(row.locator(".peak-memory")).to_contain_text("MiB")
    await expect(row.locator(".cpu-time")).to_contain_text(" s")
    await expect(page.locator("dl.props")).to_contain_text("memory 40.0 MiB, pids 20")
