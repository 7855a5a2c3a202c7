"""Serving the web UI: ``/`` redirects to ``/ui/``; ``/ui/…`` are the static files of
``nodes/ui/static`` (any other path under ``/ui/`` answers the page shell, the UI routes by the
URL fragment). The files are public (the rule table says so); the data behind them is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from nodes.ui import STATIC

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
MAX_PATH = 256  # characters of a path under /ui/ looked up as a file (ours are far shorter)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def resolve(root: Path, rel: str) -> Path | None:
    """The file ``rel`` names inside ``root``, or None (missing, a folder, or outside ``root``)."""
    if not rel or "\x00" in rel or len(rel) > MAX_PATH:
        return None
    try:
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
    except (OSError, ValueError):  # a part too long for the file system (ENAMETOOLONG), … (D501)
        return None
    return path


def _file(path: Path) -> web.Response:
    ctype = TYPES.get(path.suffix, "application/octet-stream")
    resp = web.Response(body=path.read_bytes(), content_type=ctype)
    resp.headers.update(SECURITY_HEADERS)
    return resp


async def ui_root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


async def ui_file(request: web.Request) -> web.Response:
    rel = request.match_info.get("path", "")
    path = resolve(STATIC, rel)
    if path is None:
        if Path(rel).suffix in TYPES and rel != "index.html":
            raise web.HTTPNotFound(reason=f"no such file /ui/{rel}")
        path = STATIC / "index.html"
    return _file(path)


def add_routes(app: web.Application, node: ApiContext) -> None:
    r = app.router
    r.add_get("/", ui_root)
    r.add_get("/ui", ui_root)
    r.add_get("/ui/{path:.*}", ui_file)
