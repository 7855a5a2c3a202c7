"""Operations routes: the generated OpenAPI document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from nodes.api.openapi import build_openapi

if TYPE_CHECKING:
    from nodes.api.context import ApiContext


class OpsApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node
        self.doc: dict[str, Any] | None = None

    async def openapi(self, request: web.Request) -> web.Response:
        """The OpenAPI document of this API (generated from the route table and the models)"""
        if self.doc is None:  # built on first use, when every module has added its routes
            self.doc = build_openapi(request.app)
        return web.json_response(self.doc)


def add_routes(app: web.Application, node: ApiContext) -> None:
    api = OpsApi(node)
    app.router.add_get("/api/v1/openapi.json", api.openapi)
