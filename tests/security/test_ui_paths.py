"""The web UI's files are public (``/ui/…``): anyone who reaches the port picks the path the node
looks up on its disk. A path part longer than the file system allows (``/ui/`` + 300 times ``a``),
or a path of thousands of parts, made ``stat`` raise ``ENAMETOOLONG``: a 500 and a traceback in
the node log for every such request, without credentials (D501). Now such a path is no file: the
page shell (or a 404 for a missing asset), and nothing outside the static folder is served."""

from __future__ import annotations

import aiohttp

from nodes.api.ui import resolve
from nodes.ui import STATIC


async def test_odd_ui_paths_from_anyone_are_never_a_500(cluster):
    await cluster.start()
    paths = [
        "/ui/" + "a" * 300,  # one part over NAME_MAX (255)
        "/ui/" + "a/" * 3000,  # past PATH_MAX (4096)
        "/ui/" + "a" * 300 + ".js",  # a missing asset: 404, not 500
        "/ui/..%2F..%2Fapi%2F__init__.py",  # outside the static folder: the page shell
    ]
    async with aiohttp.ClientSession() as http:  # no credentials
        for path in paths:
            async with http.get(cluster.url(None, path)) as resp:
                body = await resp.text()
                assert resp.status in (200, 404), (path[:40], resp.status, body[:200])
                assert "import" not in body, path[:40]  # never a Python file
    async with aiohttp.ClientSession() as http:  # the UI itself still answers
        async with http.get(cluster.url(None, "/ui/app.css")) as resp:
            assert resp.status == 200 and resp.content_type == "text/css"


def test_resolve_refuses_what_the_file_system_cannot_name():
    assert resolve(STATIC, "a" * 300) is None
    assert resolve(STATIC, "a/" * 3000) is None
    assert resolve(STATIC, "../api/ui.py") is None
    assert resolve(STATIC, "app.css") == STATIC / "app.css"
