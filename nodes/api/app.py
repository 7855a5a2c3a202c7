"""The HTTP API every node serves (JSON under /api/v1, plus /healthz, /readyz, /status,
/metrics): the application is made here, the only module that knows every router and every
middleware; and the site that serves it (head and keep-alive deadlines)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from nodes.api import auth as api_auth
from nodes.api import budgets as api_budgets
from nodes.api import calendars as api_calendars
from nodes.api import cron as api_cron
from nodes.api import headers
from nodes.api import hooks as api_hooks
from nodes.api import limits as api_limits
from nodes.api import logs as api_logs
from nodes.api import notify as api_notify
from nodes.api import ops as api_ops
from nodes.api import placement as api_placement
from nodes.api import plan as api_plan
from nodes.api import secrets as api_secrets
from nodes.api import shards as api_shards
from nodes.api import slots as api_slots
from nodes.api import ui as api_ui
from nodes.api import workflows as api_workflows
from nodes.api.access import ACCESS, access_middleware
from nodes.api.http import (
    NODE,
    body_deadline_middleware,
    errors_middleware,
    log,
    path_parts_middleware,
)
from nodes.api.jobs import Api

if TYPE_CHECKING:
    from nodes.api.context import ApiContext


def make_app(node: ApiContext) -> web.Application:
    app = web.Application(
        middlewares=[
            errors_middleware,  # CronmeshError → its status; the one place errors are mapped
            body_deadline_middleware,  # a body must arrive within http_body_timeout
            access_middleware,  # authentication, authorization, audit (issue 6)
            path_parts_middleware,  # after access: strangers get 401/403 first
        ],
        client_max_size=1024 * 1024,
    )
    app[NODE] = node
    app[ACCESS] = node.access

    headers.install(app)  # nosniff and a CSP on every answer (issue 19 item 21)

    Api(node).routes(app)
    api_auth.add_routes(app, node)  # identity and access (issue 6)
    api_notify.add_middleware(app)  # secrets and URLs of webhooks redacted in answers (D172)
    api_limits.add_routes(app, node)  # settings: webhook allow-list, run caps (D170, D173)
    api_placement.add_routes(app, node)  # placement (issue 5)
    api_workflows.add_routes(app, node)  # workflows (issue 4)
    api_ops.add_routes(app, node)  # operations, OpenAPI (issue 8)
    api_notify.add_routes(app, node)  # notification defaults
    api_logs.add_routes(app, node)  # logs: live tail, store, archive (issue 3)
    api_ui.add_routes(app, node)  # web UI (issue 7)
    api_cron.add_routes(app, node)  # cron preview
    api_secrets.add_routes(app, node)  # project secrets (issue 18)
    api_slots.add_routes(app, node)  # slot outcomes (issue 21)
    api_calendars.add_routes(app, node)  # calendars, blackout windows, freeze (issue 21)
    api_plan.add_routes(app, node)  # the schedule simulator (issue 21)
    api_hooks.add_routes(app, node)  # incoming event triggers: named hooks (issue 24)
    api_budgets.add_routes(app, node)  # budgets (issue 24, D274)
    api_shards.add_routes(app, node)  # scheduler_shards, shard leaders (issue 23, D300)
    return app


class HeadDeadlineHandler(RequestHandler):
    """aiohttp's request handler with a deadline on reading a request's head (request line and
    headers): a connection that has not sent a whole head ``head_timeout`` seconds after it
    opened, or after the first byte of its next request, is closed (slowloris, #19 item 16).
    aiohttp has no such timeout of its own; idle keep-alive connections are closed by
    ``keepalive_timeout``; bodies by ``body_deadline_middleware`` and ``client_max_size``."""

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        reading_head = self._payload_parser is None and not self._upgraded
        super().data_received(data)
        if not reading_head:
            return
        if self._request_count > heads:
            self._disarm()  # a whole head arrived
        elif data and self._head_timer is None:
            self._arm()  # the first bytes of a next request: its head has the same deadline

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A request aiohttp's parser refused (a header or URL over 8 KiB, a character a URL
        cannot hold) is the client's error, answered 400: one debug line, not an error with a
        traceback per request that anyone on the network could send (D503)."""
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            log.debug("refused a malformed request", status=exc.code, error=str(exc)[:200])
            return
        super().log_exception(*args, **kw)

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._head_timeout, self._expire, self._request_count)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expire(self, heads: int) -> None:
        self._head_timer = None
        if self._request_count == heads:  # still no whole head
            log.debug("closing a connection that sent no whole request in time")
            self.force_close()


class HeadDeadlineSite(web.TCPSite):
    """``TCPSite`` whose connections are ``HeadDeadlineHandler``s."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        head_timeout: float,
        keepalive_timeout: float,
    ) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self._handler_args: dict[str, Any] = {
            "head_timeout": head_timeout,
            "keepalive_timeout": keepalive_timeout,
            # after an early answer (408, 413) aiohttp reads what is left of the body this long
            # (10 s by default) so the client sees the answer; a slow body needs no more
            "lingering_time": 2.0,
            "access_log": None,
        }

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        args = self._handler_args
        self._server = await loop.create_server(
            lambda: HeadDeadlineHandler(server, loop=loop, **args),
            self._host,
            self._port,
            reuse_address=self._reuse_address,
        )


async def start_api(node: ApiContext) -> web.AppRunner:
    runner = web.AppRunner(make_app(node), access_log=None, handle_signals=False)
    await runner.setup()
    site = HeadDeadlineSite(
        runner,
        node.config.listen_host,
        node.config.listen_port,
        head_timeout=node.config.http_head_timeout,
        keepalive_timeout=node.config.http_keepalive_timeout,
    )
    await site.start()
    return runner
