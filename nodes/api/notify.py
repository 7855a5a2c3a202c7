"""Project default notifications: GET/PUT/DELETE /api/v1/projects/{project}/notifications, and
the middleware that keeps webhook secrets, URLs and headers out of answers (D172)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cluster.models import parse_model
from cluster.notify import ProjectNotifications, keep_secrets, redact_document
from cluster.permissions import RANK, role_on
from nodes import webhooks
from nodes.api.access import PRINCIPAL
from nodes.api.http import body_json, ok, project_of, require_connected
from nodes.api.openapi import documented

if TYPE_CHECKING:
    from nodes.api.context import ApiContext


class NotifyApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node

    @documented(answer=ProjectNotifications)
    async def get_defaults(self, request: web.Request) -> web.Response:
        """The project's default notification rules (for jobs without their own)"""
        project = project_of(request)
        require_connected(self.node)
        kv = await self.node.etcd.get(self.node.keys.notification_defaults(project))
        doc = ProjectNotifications.model_validate_json(kv.value) if kv else ProjectNotifications()
        return ok(doc.model_dump(mode="json"))

    @documented(body=ProjectNotifications, answer=ProjectNotifications)
    async def put_defaults(self, request: web.Request) -> web.Response:
        """Replace the project's default notification rules"""
        project = project_of(request)
        data = await body_json(request)
        doc = parse_model(ProjectNotifications, data)
        require_connected(self.node)
        await webhooks.check_rule_docs(self.node, data.get("rules"), "rules")
        key = self.node.keys.notification_defaults(project)
        kv = await self.node.etcd.get(key)
        old = ProjectNotifications.model_validate_json(kv.value).rules if kv else None
        doc = ProjectNotifications(rules=keep_secrets(doc.rules, old, "rules") or [])
        await self.node.etcd.put(key, doc.model_dump_json())
        return ok(doc.model_dump(mode="json"))

    @documented(status="204")
    async def delete_defaults(self, request: web.Request) -> web.Response:
        """Remove the project's default notification rules"""
        project = project_of(request)
        require_connected(self.node)
        await self.node.etcd.delete(self.node.keys.notification_defaults(project))
        return web.Response(status=204)


def add_routes(app: web.Application, node: ApiContext) -> None:
    api = NotifyApi(node)
    path = "/api/v1/projects/{project}/notifications"
    app.router.add_get(path, api.get_defaults)
    app.router.add_put(path, api.put_defaults)
    app.router.add_delete(path, api.delete_defaults)


Handler = Any


@web.middleware
async def redact_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every JSON answer that carries webhooks (jobs, runs' snapshots, project defaults, exports,
    whatever route adds more later): secrets never leave, and below editor on the answer's project
    URLs and header values are hidden (D172). Checked on the answer, not per handler, so a new
    route cannot forget it; answers without a ``"webhook"`` key cost one substring search."""
    response: web.StreamResponse = await handler(request)
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return response
    body = response.body
    if not isinstance(body, bytes) or b'"webhook"' not in body:
        return response
    who = request.get(PRINCIPAL)
    project = request.match_info.get("project")
    full = who is not None and role_on(who.user.roles, project) >= RANK["editor"]
    doc = redact_document(json.loads(body), full=full)
    response.body = json.dumps(doc, default=str).encode()
    return response


def add_middleware(app: web.Application) -> None:
    """Install inside the access middleware (it needs the caller)."""
    app.middlewares.append(redact_middleware)
