"""Serving the web UI (static files, the redirect at /, security headers, no path escapes) and
the cron preview endpoint the job form uses, against a real node."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from nodes.api.ui import resolve
from nodes.ui import STATIC


async def test_root_redirects_to_the_ui_and_files_are_public_with_security_headers(cluster):
    await cluster.start()
    async with aiohttp.ClientSession() as anonymous:  # no credentials: the shell is public
        async with anonymous.get(cluster.url(None, "/"), allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "/ui/"
        async with anonymous.get(cluster.url(None, "/ui/")) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert '<script type="module" src="/ui/js/app.js">' in await resp.text()
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        async with anonymous.get(cluster.url(None, "/ui/js/app.js")) as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
        async with anonymous.get(cluster.url(None, "/ui/app.css")) as resp:
            assert resp.status == 200 and resp.content_type == "text/css"
        # a deep link is the page shell; a missing asset is a 404, not the shell
        async with anonymous.get(cluster.url(None, "/ui/jobs/nightly")) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
        async with anonymous.get(cluster.url(None, "/ui/js/nope.js")) as resp:
            assert resp.status == 404
        # no way out of the static folder
        for path in ("/ui/..%2f..%2fapi.py", "/ui/%2e%2e/%2e%2e/api.py", "/ui/../api_ui.py"):
            async with anonymous.get(cluster.url(None, path)) as resp:
                text = await resp.text()
                assert "def add_routes" not in text, path
        # the data behind the pages is not public
        async with anonymous.get(cluster.url(None, "/api/v1/cron/preview?expr=@daily")) as resp:
            assert resp.status == 401


def test_resolve_stays_inside_the_static_folder(tmp_path: Path):
    assert resolve(STATIC, "index.html") == STATIC / "index.html"
    assert resolve(STATIC, "js/app.js") == STATIC / "js" / "app.js"
    assert resolve(STATIC, "../api_ui.py") is None
    assert resolve(STATIC, "/etc/passwd") is None
    assert resolve(STATIC, "js") is None  # a folder
    assert resolve(STATIC, "") is None
    assert resolve(STATIC, "a\x00b") is None


async def test_cron_preview_lists_fire_times_in_the_zone_and_names_bad_fields(cluster):
    await cluster.start()
    path = "/api/v1/cron/preview"
    status, body = await cluster.request(
        "GET", path, params={"expr": "30 9 * * 1-5", "timezone": "Asia/Kolkata"}
    )
    assert status == 200, body
    assert len(body["times"]) == 5
    assert all(t.endswith("T09:30:00+05:30") for t in body["times"]), body
    assert body["times"] == sorted(body["times"])
    status, body = await cluster.request("GET", path, params={"expr": "@every 10m", "count": "3"})
    assert status == 200 and len(body["times"]) == 3
    # the impossible date never fires: an empty list, not an error
    status, body = await cluster.request("GET", path, params={"expr": "0 0 31 2 *"})
    assert status == 200 and body["times"] == []
    for params, field in (
        ({"expr": "61 * * * *"}, "expr"),
        ({"expr": "* * *"}, "expr"),
        ({}, "expr"),
        ({"expr": "x" * 300}, "expr"),
        ({"expr": "@daily", "timezone": "Mars/Olympus"}, "timezone"),
        ({"expr": "@daily", "count": "0"}, "count"),
        ({"expr": "@daily", "count": "many"}, "count"),
    ):
        status, body = await cluster.request("GET", path, params=params)
        assert status == 400, (params, body)
        assert body["error"]["field"] == field, (params, body)
        assert body["error"]["message"]
