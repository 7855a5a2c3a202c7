"""What a user hits in a real browser (issue #26), each point reproduced in Debian's Chromium
against a real node and etcd: times that say their zone (the browser in two zones), a link opened
while logged out, page titles, workflow task runs in the runs list, a log that prints fast, a
graph whose edges do not run through boxes, dead nodes, deleted jobs' runs, and forms."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import unquote

from playwright.async_api import expect

from tests.browser.conftest import PASSWORD, make_user
from tests.conftest import wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"
WORKFLOWS = "/api/v1/projects/default/workflows"


async def _login_form(ui, user: str = "alice") -> None:
    await ui.page.get_by_label("User name").fill(user)
    await ui.page.get_by_label("Password").fill(PASSWORD)
    await ui.page.get_by_role("button", name="Log in").click()


async def test_times_say_their_zone_in_two_browser_zones(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    job = {
        "name": "ny",
        "command": "true",
        "schedules": [{"cron": "0 9 * * *", "timezone": "America/New_York"}],
    }
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body
    status, run = await cluster.request("POST", f"{JOBS}/ny/runs", json={})
    assert status == 201, run
    created = []
    for zone, offset in (("Europe/Berlin", r"GMT\+[12]"), ("America/Los_Angeles", r"GMT-[78]")):
        ui = await ui_factory(cluster.url(), timezone_id=zone)
        await ui.login("alice")
        page = ui.page
        await ui.go("#/jobs/ny")
        # the schedule's times are in the schedule's own zone, whatever the browser's
        fire = page.locator("ol.fire-times li").first
        await expect(fire).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d 09:00:00 GMT-[45]$"))
        # other times in the browser's zone, saying so
        cell = page.locator(f"tr[data-run='{run['id']}'] time")
        await expect(cell).to_have_text(re.compile(rf" {offset}$"))
        created.append(await cell.inner_text())
        if zone == "Europe/Berlin":
            await ui.shot("job-zones")
        # the header switch: UTC, then the job's zone
        await page.get_by_label("Show times in").select_option("utc")
        await expect(cell).to_have_text(re.compile(r" UTC$"))
        utc = await cell.inner_text()
        await page.get_by_label("Show times in").select_option("job")
        await expect(cell).to_have_text(re.compile(r" GMT-[45]$"))
        await expect(fire).to_have_text(re.compile(r" 09:00:00 GMT-[45]$"))
        # the run page follows the switch too (the job's zone)
        await ui.go(f"#/runs/{run['id']}")
        await expect(page.locator("dd time").first).to_have_text(re.compile(r" GMT-[45]$"))
        # the form preview: the schedule's zone
        await ui.go("#/jobs/ny/edit")
        await expect(page.locator("#cron-preview li").first).to_have_text(
            re.compile(r" 09:00:00 GMT-[45]$")
        )
        await page.get_by_label("Show times in").select_option("browser")
    # the same instant, told in two zones (and in UTC both times)
    assert created[0] != created[1], created
    assert utc.endswith(" UTC")


async def test_a_link_opened_logged_out_lands_on_its_page_and_titles(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    status, body = await cluster.request("POST", JOBS, json={"name": "ticker", "command": "exit 2"})
    assert status == 201, body
    status, run = await cluster.request("POST", f"{JOBS}/ticker/runs", json={})
    assert status == 201, run

    async def failed():
        return (await cluster.request("GET", f"{RUNS}/{run['id']}"))[1]["status"] == "failed"

    await wait_for(failed, 30, what="run failed")
    ui = await ui_factory(cluster.url())
    page = ui.page
    # an alert e-mail's link, opened logged out
    await ui.go(f"#/runs/{run['id']}")
    await expect(page.get_by_label("User name")).to_be_visible()
    hash_ = await page.evaluate("location.hash")
    assert hash_.count("login") == 1, hash_  # `next` wrapped once
    assert unquote(hash_) == f"#/login?next=#/runs/{run['id']}", hash_
    # the login page shows no navigation and no "Log out"
    await expect(page.get_by_role("button", name="Log out")).to_be_hidden()
    await expect(page.get_by_role("navigation")).to_be_hidden()
    assert await page.title() == "Log in · cronmesh"
    await _login_form(ui)
    await expect(page.get_by_role("heading", name=f"Run {run['id']}")).to_be_visible()
    await expect(page).to_have_title(f"Run {run['id'][:12]}… failed · ticker · cronmesh")
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()
    # a link with its own query survives the login too
    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_label("User name")).to_be_visible()
    await ui.go("#/runs?status=failed")
    await expect(page.get_by_label("User name")).to_be_visible()
    await _login_form(ui)
    await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    await expect(page.get_by_label("Status")).to_have_value("failed")
    await expect(page).to_have_title("Runs · cronmesh")
    await ui.go("#/jobs")
    await expect(page).to_have_title("Jobs · cronmesh")
    await ui.go("#/jobs/ticker")
    await expect(page).to_have_title("ticker · Jobs · cronmesh")
    # while a page's data is on its way the page says so (never blank)
    release = asyncio.Event()

    async def held(route):
        await release.wait()
        await route.continue_()

    await page.route("**/api/v1/projects/default/jobs/ticker", held)
    await ui.go("#/jobs/ticker?again")
    await expect(page.locator("main .loading")).to_have_text("Loading…")
    release.set()
    await expect(page.get_by_role("heading", name="Definition")).to_be_visible()
    await expect(page.locator("main .loading")).to_have_count(0)
    await page.unroute("**/api/v1/projects/default/jobs/ticker", held)
    # a crafted `next` cannot send the user anywhere but a page of this UI
    await page.get_by_role("button", name="Log out").click()
    # the logout answer clears the session cookie: log in again only once it has come back (a
    # slow answer arriving after the new login would clear the new session)
    await expect(page.get_by_label("User name")).to_be_visible()
    await ui.go("#/login?next=https%3A%2F%2Fevil.example%2F")
    await _login_form(ui)
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    assert page.url.startswith(cluster.url()) and page.url.endswith("/ui/#/"), page.url


async def test_a_fast_log_streams_5000_lines_and_the_page_stays_responsive(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    # 5,000 lines in bursts of 250 over ~4 s: the stream lasts long enough to click during it
    command = (
        'i=0; while [ $i -lt 5000 ]; do i=$((i+1)); echo "line $i"; '
        "[ $((i % 250)) -eq 0 ] && sleep 0.2; done; true"
    )
    status, body = await cluster.request("POST", JOBS, json={"name": "chatty", "command": command})
    assert status == 201, body
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await ui.go("#/jobs/chatty")
    await page.evaluate(
        """() => { window.lat = []; document.addEventListener('click', (e) => {
            if (e.target.closest('button')?.textContent === 'Jump to end')
                window.lat.push(performance.now() - e.timeStamp); }, true); }"""
    )
    await page.get_by_role("button", name="Run now").click()
    await page.get_by_role("dialog").get_by_role("button", name="Run now").click()
    await expect(page.locator(".log-state")).to_have_text("live")
    await expect(page.locator("pre.log span").first).to_be_visible()
    jump = page.get_by_role("button", name="Jump to end")
    clicks = 0
    while await page.locator("#run-status").inner_text() == "running" and clicks < 10:
        await jump.click()
        clicks += 1
    assert clicks >= 2, "the run ended before the page could be clicked during the stream"
    latencies = await page.evaluate("window.lat")
    assert len(latencies) == clicks, latencies
    print(f"click latencies while streaming: {[round(x) for x in latencies]} ms")
    assert max(latencies) < 200, f"clicks waited {latencies} ms while the log streamed"
    await expect(page.locator("#run-status")).to_have_text("succeeded")
    await expect(page.locator(".log-state")).to_have_text("5000 line(s)")
    # the page keeps a window of the log; the last line is there, numbered
    last = page.locator("pre.log span").last
    await expect(last).to_have_text("line 5000")
    assert await last.get_attribute("data-n") == "5000"
    count = await page.locator("pre.log span").count()
    assert count <= 2000, count
    await expect(page.locator(".log-hidden")).to_contain_text("3000 earlier line(s)")
    # search within it, download the raw log
    await page.get_by_label("Search the log").fill("line 4999")
    await expect(page.locator(".log-hits")).to_have_text("1 match(es)")
    await expect(page.locator("pre.log span.hit")).to_have_text("line 4999")
    href = await page.get_by_role("link", name="Download").get_attribute("href")
    assert href and "/logs?attempt=1" in href, href
    raw = await page.evaluate("async (u) => (await fetch(u)).text()", href)
    lines = raw.splitlines()  # the whole log, each line with its time and stream
    assert len(lines) == 5000 and lines[-1].endswith(" stdout line 5000"), lines[-1:]
    # read back from the top, then "Jump to end": the last line in view, following again
    await page.get_by_label("Auto-scroll").uncheck()
    log = page.locator("pre.log")
    await log.evaluate("(el) => { el.scrollTop = 0; }")
    assert await log.evaluate("(el) => el.scrollHeight > el.clientHeight + 100")  # it scrolls
    await jump.click()
    await expect(page.get_by_label("Auto-scroll")).to_be_checked()
    assert await log.evaluate("(el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 2")
    await ui.shot("run-log-fast")


# Every edge sampled along its length: no point strictly inside a box other than its two ends'.
EDGE_HITS = """() => {
    const boxes = [...document.querySelectorAll('svg.dag g.task')].map((g) => {
        const m = /translate\\(([-\\d.]+),\\s*([-\\d.]+)\\)/.exec(g.getAttribute('transform'));
        const r = g.querySelector('rect');
        return {task: g.dataset.task, x: +m[1], y: +m[2], w: +r.getAttribute('width'),
                h: +r.getAttribute('height')};
    });
    const hits = [];
    for (const e of document.querySelectorAll('svg.dag path.edge')) {
        const len = e.getTotalLength();
        for (let i = 0; i <= 200; i++) {
            const p = e.getPointAtLength((len * i) / 200);
            for (const b of boxes) {
                if (b.task === e.dataset.from || b.task === e.dataset.to) continue;
                if (p.x > b.x + 1 && p.x < b.x + b.w - 1 && p.y > b.y + 1 && p.y < b.y + b.h - 1)
                    hits.push(`${e.dataset.from} -> ${e.dataset.to} crosses ${b.task}`);
            }
        }
    }
    return {edges: document.querySelectorAll('svg.dag path.edge').length, hits: [...new Set(hits)]};
}"""


async def test_graph_edges_never_cross_a_box_and_task_runs_link_to_the_execution(
    cluster, ui_factory
):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    wf = {
        "name": "etl",
        "tasks": [
            {"name": "extract", "command": "echo x"},
            {"name": "transform", "command": "echo t", "depends_on": ["extract"]},
            {"name": "report", "command": "echo r", "depends_on": ["extract"]},
            {"name": "load", "command": "echo l", "depends_on": ["transform"]},
            {"name": "cleanup", "command": "echo c", "depends_on": ["load", "report"]},
            {"name": "notify", "command": "echo n", "depends_on": ["extract", "cleanup"]},
        ],
    }
    status, body = await cluster.request("POST", WORKFLOWS, json=wf)
    assert status == 201, body
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await ui.go("#/workflows/etl")
    await expect(page.locator("svg.dag g.task")).to_have_count(6)
    geometry = await page.evaluate(EDGE_HITS)
    assert geometry["edges"] == 7, geometry
    assert geometry["hits"] == [], geometry["hits"]
    # report -> cleanup skips the layer of load: it is routed through a free row
    boxes = {}
    for name in ("report", "load", "cleanup"):
        boxes[name] = await page.locator(f"g[data-task={name}]").bounding_box()
    assert boxes["report"]["x"] < boxes["load"]["x"] < boxes["cleanup"]["x"], boxes
    # hovering a task highlights its edges (and only those)
    await page.locator("g[data-task=cleanup]").hover()
    hl = page.locator("svg.dag path.edge.hl")
    await expect(hl).to_have_count(3)  # load -> cleanup, report -> cleanup, cleanup -> notify
    await expect(page.locator("svg.dag.dim")).to_have_count(1)
    await page.mouse.move(1, 1)
    await expect(hl).to_have_count(0)
    await ui.shot("workflow-graph")

    # a task's run in the runs list reads "etl > transform" (a guillemet) and opens the execution at that task
    await page.get_by_role("button", name="Run now").click()
    await expect(page.locator("h1 .badge")).to_have_text("succeeded")
    await ui.go("#/runs")
    link = page.get_by_role("link", name="etl \u203a transform")
    await expect(link).to_have_count(1)
    await link.click()
    await expect(page.locator(".task-panel h3")).to_contain_text("Task transform")
    assert "?task=transform" in await page.evaluate("location.hash")
    await expect(page).to_have_title(re.compile(r"^Execution \S+ succeeded · etl · cronmesh$"))


async def test_dead_nodes_and_a_lost_connection_on_the_machines_page(cluster, procs, ui_factory):
    n1 = await cluster.start("n1")
    n2 = procs.start("n2")  # a real process, to be killed without a goodbye
    await make_user(cluster, "alice", {"*": "admin"})

    async def n2_up():
        status, doc = await cluster.request("GET", "/api/v1/nodes/n2")
        return status == 200 and doc["up"]

    await wait_for(n2_up, 30, what="n2 up")
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await ui.go("#/machines")
    row = page.locator("tr[data-node=n2]")
    await expect(row.get_by_role("button", name="Drain")).to_be_visible()
    await expect(row.locator(".heartbeat time")).to_have_count(1)
    n2.signal(9)  # SIGKILL: no stopped_at is written; its lease expires
    await expect(row.locator(".badge", has_text=re.compile("^down$"))).to_be_visible()
    # still says when it was last seen, and offers nothing to do to a dead node
    await expect(row.locator(".heartbeat time")).to_have_text(re.compile(r"\d\d:\d\d:\d\d"))
    await expect(row.locator(".heartbeat")).to_contain_text(" ago")
    await expect(row.get_by_role("button", name="Drain")).to_have_count(0)
    await expect(row.get_by_role("button", name="Disable")).to_have_count(0)
    await ui.shot("machines-node-down")
    # the node the browser talks to goes away: the page says so instead of showing stale "up"
    await cluster.stop(n1)
    banner = page.get_by_role("alert").filter(has_text="Connection to the node lost")
    await expect(banner).to_be_visible()
    await expect(page.locator("main.stale")).to_have_count(1)


async def test_a_deleted_jobs_runs_stay_listed_under_it(cluster, ui_factory):
    node = await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    status, body = await cluster.request("POST", JOBS, json={"name": "gone", "command": "echo hi"})
    assert status == 201, body
    status, run = await cluster.request("POST", f"{JOBS}/gone/runs", json={})
    assert status == 201, run

    async def done():
        return (await cluster.request("GET", f"{RUNS}/{run['id']}"))[1]["status"] == "succeeded"

    await wait_for(done, 30, what="run succeeded")
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await ui.go("#/jobs/gone")
    await page.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("dialog")).to_contain_text("past runs stay")
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    assert (await cluster.request("GET", f"{JOBS}/gone"))[0] == 404
    await wait_for(lambda: node.scheduler is not None, 20, what="scheduler leading")
    await (
        node.scheduler.retention.prune()
    )  # retention runs: the confirmation must have told the truth
    status, kept = await cluster.request("GET", f"{RUNS}/{run['id']}")
    assert status == 200 and kept["status"] == "succeeded", kept
    await ui.go("#/jobs/gone")
    await expect(page.get_by_role("heading", name="gone")).to_contain_text("deleted")
    await expect(page.locator(f"tr[data-run='{run['id']}']")).to_be_visible()
    await page.get_by_role("link", name=run["id"]).click()
    await expect(page.locator("#run-status")).to_have_text("succeeded")
    await expect(page.locator("dd .badge.st-deleted")).to_have_text("deleted")
    await expect(page.locator("pre.log")).to_contain_text("hi")


async def test_forms_keep_input_and_errors_stay_current(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    await make_user(cluster, "vera", {"default": "viewer"})
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await ui.go("#/jobs/new")
    await expect(page).to_have_title("New job · Jobs · cronmesh")
    # a fixed time zone loses its error even while the cron field is still wrong
    tz_error = page.locator(".field[data-field=timezone] .field-error")
    await page.get_by_label("Time zone").fill("Europe/Berln")
    await page.get_by_label("Cron schedule").fill("0 9 * * *")
    await expect(tz_error).to_contain_text("unknown time zone")
    await page.get_by_label("Cron schedule").fill("0 99 * * *")
    await page.get_by_label("Time zone").fill("Europe/Berlin")
    await expect(page.locator(".field[data-field=cron] .field-error")).to_contain_text("hour")
    await expect(tz_error).to_have_text("")
    # an empty name: a sentence, not a regular expression
    await page.get_by_label("Cron schedule").fill("0 9 * * *")
    await page.get_by_role("button", name="Create job").click()
    name_error = page.locator(".field[data-field=name] .field-error")
    await expect(name_error).to_have_text("A job needs a name.")
    await page.get_by_label("Name", exact=True).fill("ok-name")
    await expect(name_error).to_have_text("")  # gone as soon as the field changes

    # a server error keeps the new-user dialog open with what was typed; the roles are listed
    await ui.go("#/users")
    await page.get_by_role("button", name="New user").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("viewer, operator, editor, admin")
    await dialog.get_by_label("Name").fill("bob")
    await dialog.get_by_label("Password").fill("bob's long password")
    await dialog.get_by_label("Roles").fill("default=boss")
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog.get_by_role("alert").filter(has_text=re.compile("."))).to_be_visible()
    await expect(dialog.get_by_label("Name")).to_have_value("bob")
    await expect(dialog.get_by_label("Roles")).to_have_value("default=boss")
    await dialog.get_by_label("Roles").fill("default=editor")
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog).to_have_count(0)
    await expect(page.locator("tr[data-user=bob]")).to_contain_text("default=editor")

    # a viewer is told before filling the form
    viewer = await ui_factory(cluster.url())
    await viewer.login("vera")
    await viewer.go("#/jobs/new")
    await expect(viewer.page.get_by_role("alert")).to_contain_text("cannot create jobs")
    await expect(viewer.page.get_by_label("Command")).to_have_count(0)


async def _finished(cluster, run_id: str, status: str) -> None:
    async def done():
        return (await cluster.request("GET", f"{RUNS}/{run_id}"))[1]["status"] == status

    await wait_for(done, 30, what=f"run {run_id} {status}")


async def test_runs_history_search_range_paging_in_the_url_and_run_again(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    for job in (
        {"name": "etl-daily", "command": "echo etl"},
        {"name": "report", "command": "sleep 60", "kill_grace": 1},
        {"name": "flaky", "command": "exit 1", "retries": 1, "retry_interval": 0},
    ):
        status, body = await cluster.request("POST", JOBS, json=job)
        assert status == 201, body
    etl = []
    for _ in range(3):
        status, run = await cluster.request("POST", f"{JOBS}/etl-daily/runs", json={})
        assert status == 201, run
        etl.append(run["id"])
    _, slow = await cluster.request("POST", f"{JOBS}/report/runs", json={})
    _, flaky = await cluster.request("POST", f"{JOBS}/flaky/runs", json={})
    for rid in etl:
        await _finished(cluster, rid, "succeeded")
    await _finished(cluster, slow["id"], "running")
    status, _ = await cluster.request("POST", f"{RUNS}/{slow['id']}/cancel")
    assert status == 202
    await _finished(cluster, slow["id"], "cancelled")
    await _finished(cluster, flaky["id"], "failed")

    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await ui.go("#/runs")
    # the Exit column says what the run page says for a cancelled run
    await expect(page.locator(f"tr[data-run='{slow['id']}'] td").last).to_have_text("signal 15")
    # search by any part of the name; the filter lands in the URL and survives a reload
    await page.get_by_placeholder("job name (any part)").fill("ETL")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("tbody tr")).to_have_count(3)
    assert "q=ETL" in await page.evaluate("location.hash")
    await page.reload()
    await expect(page.get_by_placeholder("job name (any part)")).to_have_value("ETL")
    await expect(page.locator("tbody tr")).to_have_count(3)
    # pages: 2 a page, Older / Newer
    await ui.go("#/runs?q=etl&limit=2")
    await expect(page.locator("tbody tr")).to_have_count(2)
    await page.get_by_role("button", name="Older").click()
    await expect(page.locator("tbody tr")).to_have_count(1)
    await expect(page.locator(f"tr[data-run='{etl[0]}']")).to_be_visible()
    assert "before=" in await page.evaluate("location.hash")
    await expect(page.get_by_role("button", name="Older")).to_have_count(0)
    await page.get_by_role("button", name="Newer").click()
    await expect(page.locator(f"tr[data-run='{etl[2]}']")).to_be_visible()
    # a time range with nothing in it says so (not "No runs yet.")
    await ui.go("#/runs")
    await page.get_by_label("From").fill("2099-01-01T00:00")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator(".empty")).to_have_text("No runs match these filters.")
    assert "from=2099-01-01T" in unquote(await page.evaluate("location.hash"))

    # retries: every attempt listed on the run page
    await ui.go(f"#/runs/{flaky['id']}")
    await expect(page.locator(".attempts tbody tr")).to_have_count(2)
    await expect(page.locator(".attempts tr[data-attempt='1']")).to_contain_text("failed")
    # Run again on a finished run
    await ui.go(f"#/runs/{etl[0]}")
    await page.get_by_role("button", name="Run again").click()
    await expect(page).not_to_have_url(re.compile(rf"#/runs/{etl[0]}$"))
    await expect(page.locator("#run-status")).to_have_text("succeeded")
    again = await page.evaluate("location.hash")
    assert again.startswith("#/runs/") and etl[0] not in again, again
    # "Run now" from the jobs list: the toast links to the run
    await ui.go("#/jobs")
    await page.locator("tr[data-job=etl-daily]").get_by_role("button", name="Run now").click()
    await page.get_by_role("dialog").get_by_role("button", name="Run now").click()
    await page.locator("#toast").get_by_role("link", name="open it").click()
    await expect(page.locator("#run-status")).to_have_text("succeeded")
    # the audit log in words, the request still shown
    await ui.go("#/audit")
    await expect(
        page.locator("tbody tr", has_text="ran job etl-daily in default").first
    ).to_contain_text("POST /api/v1/projects/default/jobs/etl-daily/runs")
    await ui.shot("runs-history")
    # the jobs list's filters are in the URL too
    await ui.go("#/jobs")
    await page.get_by_placeholder("Search name, command, description").fill("sleep")
    await expect(page.locator("tbody tr")).to_have_count(1)
    assert "q=sleep" in await page.evaluate("location.hash")
    await page.reload()
    await expect(page.get_by_placeholder("Search name, command, description")).to_have_value(
        "sleep"
    )
    await expect(page.locator("tr[data-job=report]")).to_have_count(1)
    await expect(page.locator("tbody tr")).to_have_count(1)


async def test_workflow_grid_tries_rerun_confirmation_and_phone_timeline(
    cluster, ui_factory, tmp_path
):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    marker = tmp_path / "fixed"
    wf = {
        "name": "etl-flaky",
        "tasks": [
            {"name": "extract", "command": "echo x"},
            {
                "name": "transform",
                "command": f"test -f {marker} || exit 3",
                "depends_on": ["extract"],
            },
            {"name": "load", "command": "echo l", "depends_on": ["transform"]},
        ],
    }
    status, body = await cluster.request("POST", WORKFLOWS, json=wf)
    assert status == 201, body
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    await ui.go("#/workflows/etl-flaky")
    await page.get_by_role("button", name="Run now").click()
    await expect(page.locator("h1 .badge")).to_have_text("failed")
    await page.locator("g[data-task=transform]").click()
    assert "task=transform" in await page.evaluate("location.hash")  # the selection is in the URL
    marker.write_text("ok")
    await page.get_by_role("button", name="Rerun from transform").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("earlier tries stay")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(page.locator("g[data-task=transform]")).to_have_attribute("data-state", "failed")
    await page.get_by_role("button", name="Rerun from transform").click()
    await page.get_by_role("dialog").get_by_role("button", name="Rerun").click()
    await expect(page.locator("h1 .badge")).to_have_text("succeeded")
    # the failed try is still there, under the task
    await page.reload()
    await expect(page.locator(".task-panel h3")).to_contain_text("Task transform")
    tries = page.locator(".task-panel .tries li")
    await expect(tries).to_have_count(1)
    await expect(tries.first.locator(".badge")).to_have_text("failed")
    await ui.shot("execution-tries")
    # the grid: executions x tasks, coloured by state
    await ui.go("#/workflows/etl-flaky")
    await page.get_by_role("button", name="Run now").click()
    await expect(page.locator("h1 .badge")).to_have_text("succeeded")
    await ui.go("#/workflows/etl-flaky")
    grid = page.locator("table.history-grid")
    await expect(grid.locator("tbody a.cell")).to_have_count(6)
    await expect(grid.locator("tbody tr").first.locator("th")).to_have_text("extract")
    await expect(grid.locator("a.cell[data-task=transform][data-state=succeeded]")).to_have_count(2)
    await ui.shot("workflow-grid")
    await grid.locator("a.cell[data-task=load]").first.click()
    await expect(page.locator(".task-panel h3")).to_contain_text("Task load")

    # on a phone the timeline's text stays readable
    phone = await ui_factory(cluster.url(), width=390, height=844)
    await phone.login("alice")
    await phone.go(page.url.split("/ui/", 1)[1])
    label = phone.page.locator("svg.timeline text").first
    await expect(label).to_be_visible()
    box = await label.bounding_box()
    assert box["height"] >= 9, f"timeline text is {box['height']:.1f} px tall on a phone"
    width = await phone.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone: {width}px"


async def test_schedule_picker_writes_cron(cluster, ui_factory):
    await cluster.start()
    await make_user(cluster, "alice", {"*": "admin"})
    ui = await ui_factory(cluster.url())
    await ui.login("alice")
    page = ui.page
    table = await page.evaluate(
        """async () => {
            const m = await import('/ui/js/cronfield.js');
            return [
                m.buildCron('every', {n: 15}), m.buildCron('every', {n: 1}),
                m.buildCron('every', {n: 60}), m.buildCron('hourly', {minute: 7}),
                m.buildCron('daily', {time: '23:59'}), m.buildCron('weekdays', {time: '07:30'}),
                m.buildCron('weekly', {day: 0, time: '06:00'}),
                m.buildCron('monthly', {day: 31, time: '00:00'}),
                m.buildCron('daily', {time: '24:00'}), m.buildCron('monthly', {day: 32}),
            ];
        }"""
    )
    assert table == [
        "*/15 * * * *",
        "* * * * *",
        "",
        "7 * * * *",
        "59 23 * * *",
        "30 7 * * 1-5",
        "0 6 * * 0",
        "0 0 31 * *",
        "",
        "",
    ]
    await ui.go("#/jobs/new")
    await page.get_by_label("Time zone").fill("Europe/Berlin")
    await page.get_by_label("Repeat").select_option("weekdays")
    await page.get_by_label("Time of day").fill("07:30")
    await page.get_by_role("button", name="Use").click()
    await expect(page.get_by_label("Cron schedule")).to_have_value("30 7 * * 1-5")
    await expect(page.locator("#cron-preview li")).to_have_count(5)
    await expect(page.locator("#cron-preview li").first).to_have_text(
        re.compile(r" 07:30:00 GMT\+[12]$")
    )
