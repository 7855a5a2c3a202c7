"""Security headers on every answer (D165): ``nosniff`` everywhere, and a Content-Security-Policy.

API and log answers get the strictest policy (``default-src 'none'``, ``sandbox``): a browser that
opens one directly renders nothing active, even if a job printed HTML into its log. The web UI
(``/``, ``/ui/…``) gets a policy that allows its own module scripts, styles and API calls and
nothing from elsewhere (no inline scripts, no framing).
"""

from __future__ import annotations

from aiohttp import web

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def is_ui(path: str) -> bool:
    return path in ("/", "/ui") or path.startswith("/ui/")


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: also streamed answers (log follow) get them, before the body."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Content-Security-Policy", UI_CSP if is_ui(request.path) else API_CSP)
    headers.setdefault("Referrer-Policy", "no-referrer")


def install(app: web.Application) -> None:
    app.on_response_prepare.append(add_security_headers)
