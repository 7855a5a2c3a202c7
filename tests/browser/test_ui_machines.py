"""The Machines page's load (issue #26 "Also", D257): a real node runs a job that holds memory and
burns CPU; the page shows running / capacity, the CPU and memory its runs use (from the node's
cgroup subtree), the node process and the machine, and the last-seen time; when the run ends the
usage falls; a node that stopped shows no load."""

from __future__ import annotations

import json
import re

from playwright.async_api import expect

from nodes.daemon.load import MAX_DOC_BYTES
from tests.browser.conftest import make_user
from tests.conftest import wait_for

JOBS = "/api/v1/projects/default/jobs"
MiB = 2**20
# ~96 MiB held, one core kept busy, until killed
HOG = (
    "printf 'x = bytearray(96 * 2**20)\\nfor i in range(0, len(x), 4096): x[i] = 1\\n"
    "while True: pass\\n' | python3 -"
)


def _mib(text: str) -> float:
    m = re.fullmatch(r"([\d.]+) (B|KiB|MiB|GiB)", text.strip())
    assert m, text
    return float(m.group(1)) * {"B": 1 / MiB, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[m.group(2)]


async def test_machines_show_what_runs_use_and_when_each_node_was_last_seen(cluster, ui_factory):
    n1 = await cluster.start("n1", capacity=16, properties={"role": "hog"})
    n2 = await cluster.start("n2", capacity=4, properties={"role": "idle"})
    await make_user(cluster, "alice", {"*": "admin"})
    job = {"name": "hog", "command": HOG, "target": {"selector": "role=hog"}, "kill_grace": 1}
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 201, body
    layout = n1.containment.layout
    if not layout.enabled:  # the docs promise "—" there; this machine class has cgroups
        raise AssertionError(f"cgroups unavailable here: {layout.reason}")

    status, run = await cluster.request("POST", f"{JOBS}/hog/runs", json={})
    assert status == 201, run

    async def hogging():
        _, doc = await cluster.request("GET", "/api/v1/nodes/n1")
        load = doc.get("load") or {}
        return (load.get("runs_memory") or 0) > 80 * MiB and (load.get("runs_cpu") or 0) > 0.02

    await wait_for(hogging, 60, what="n1 publishes its run's memory and CPU")
    _, doc = await cluster.request("GET", "/api/v1/nodes/n1")
    assert doc["running"] == 1 and doc["last_heartbeat"]
    assert len(json.dumps(doc["load"])) <= MAX_DOC_BYTES, doc["load"]
    assert doc["load"]["node_rss"] > 10 * MiB and doc["load"]["cpus"] >= 1

    ui = await ui_factory(cluster.url(n2))
    await ui.login("alice")
    page = ui.page
    await ui.go("#/machines")
    row = page.locator("tr[data-node=n1]")
    await expect(row.locator(".load")).to_contain_text("1 / 16")
    await expect(row.locator(".runs-cpu")).to_have_text(re.compile(r"^\d+\.\d\d CPU$"))
    cpu = float((await row.locator(".runs-cpu").inner_text()).split()[0])
    assert cpu > 0.02, cpu  # a busy loop; on a loaded 2-core box it gets a share only
    assert _mib(await row.locator(".runs-memory").inner_text()) > 80
    await expect(row.locator(".node-process")).to_contain_text("node process:")
    await expect(row.locator(".machine")).to_contain_text(re.compile(r"load \d+\.\d\d / \d+ CPUs"))
    await expect(row.locator(".machine")).to_contain_text(re.compile(r"of [\d.]+ GiB used"))
    await expect(row.locator(".heartbeat time")).to_have_count(1)
    await expect(row.locator(".heartbeat")).to_contain_text(" ago")
    idle = page.locator("tr[data-node=n2]")
    await expect(idle.locator(".load")).to_contain_text("0 / 4")
    await ui.shot("machines-load")

    # the run ends: its memory is given back, the page follows
    status, _ = await cluster.request("POST", f"/api/v1/projects/default/runs/{run['id']}/cancel")
    assert status == 202
    await expect(row.locator(".load")).to_contain_text("0 / 16", timeout=40_000)

    async def released():
        text = await row.locator(".runs-memory").inner_text()
        return _mib(text) < 40

    await wait_for(released, 60, what="the page shows the run's memory released")

    # a node that stopped publishes nothing: no stale load, its last-seen time stays
    await cluster.stop(n1)
    await expect(row.locator(".badge", has_text=re.compile("^down$"))).to_be_visible()
    await expect(row.locator(".runs-usage")).to_have_text("down")
    await expect(row.locator(".heartbeat time")).to_have_count(1)
