"""Operations routes: the generated OpenAPI document, and the metrics that are read on scrape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from nodes import api_notify, metrics
from nodes.openapi import build_openapi

if TYPE_CHECKING:
    from nodes.daemon import Node


def add_routes(app: web.Application, node: Node) -> None:
    cache: dict[str, Any] = {}

    async def openapi(request: web.Request) -> web.Response:
        """The OpenAPI document of this API (generated from the route table and the models)"""
        if "doc" not in cache:  # built on first use, when every module has added its routes
            cache["doc"] = build_openapi(request.app)
        return web.json_response(cache["doc"])

    app.router.add_get("/api/v1/openapi.json", openapi)
    api_notify.add_routes(app, node)

    def queue_depth() -> float:
        worker = node.worker
        return float(len(worker.candidates)) if worker is not None else 0.0

    metrics.QUEUE_DEPTH.set_function(queue_depth)
