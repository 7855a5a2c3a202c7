"""Operations routes: the generated OpenAPI document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from nodes.api.openapi import build_openapi

if TYPE_CHECKING:
    from nodes.api.context import ApiContext


def add_routes(app: web.Application, node: ApiContext) -> None:
    cache: dict[str, Any] = {}

    async def openapi(request: web.Request) -> web.Response:
        """The OpenAPI document of this API (generated from the route table and the models)"""
        if "doc" not in cache:  # built on first use, when every module has added its routes
            cache["doc"] = build_openapi(request.app)
        return web.json_response(cache["doc"])

    app.router.add_get("/api/v1/openapi.json", openapi)
