"""Project default notifications: GET/PUT/DELETE /api/v1/projects/{project}/notifications."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from cluster.errors import Unavailable
from cluster.models import parse_model
from cluster.notify import ProjectNotifications
from nodes.api.openapi import documented

if TYPE_CHECKING:
    from nodes.api.context import ApiContext


def add_routes(app: web.Application, node: ApiContext) -> None:
    from nodes.api.http import body_json, ok, project_of

    def connected() -> None:
        if node.store is None or node.session is None or node.session.lost.is_set():
            raise Unavailable("this node is not connected to etcd")

    @documented(answer=ProjectNotifications)
    async def get_defaults(request: web.Request) -> web.Response:
        """The project's default notification rules (for jobs without their own)"""
        project = project_of(request)
        connected()
        kv = await node.etcd.get(node.keys.notification_defaults(project))
        doc = ProjectNotifications.model_validate_json(kv.value) if kv else ProjectNotifications()
        return ok(doc.model_dump(mode="json"))

    @documented(body=ProjectNotifications, answer=ProjectNotifications)
    async def put_defaults(request: web.Request) -> web.Response:
        """Replace the project's default notification rules"""
        project = project_of(request)
        doc = parse_model(ProjectNotifications, await body_json(request))
        connected()
        await node.etcd.put(node.keys.notification_defaults(project), doc.model_dump_json())
        return ok(doc.model_dump(mode="json"))

    @documented(status="204")
    async def delete_defaults(request: web.Request) -> web.Response:
        """Remove the project's default notification rules"""
        project = project_of(request)
        connected()
        await node.etcd.delete(node.keys.notification_defaults(project))
        return web.Response(status=204)

    path = "/api/v1/projects/{project}/notifications"
    app.router.add_get(path, get_defaults)
    app.router.add_put(path, put_defaults)
    app.router.add_delete(path, delete_defaults)
