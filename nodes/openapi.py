"""The OpenAPI 3.1 document of the HTTP API, built from the live route table and the pydantic
models (served at /api/v1/openapi.json): nothing here lists the routes by hand.

Every route of the application appears, whoever added it. What a route reads and answers is
declared on the handler itself with ``@documented(body=…, answer=…, status=…, query=…)``; a handler
without a declaration is still documented (any JSON in, "2XX" out), so a new route is never
missing from the document.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from cluster.models import Job, Run
from nodes import __version__


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobList(BaseModel):
    jobs: list[Job]


class RunList(BaseModel):
    runs: list[Run]
    next: str | None = None  # the `before` of the next page; null: no more


class ProjectList(BaseModel):
    projects: list[str]


class Health(BaseModel):
    status: str
    node: str


class Ready(BaseModel):
    ready: bool
    node: str


STR = {"type": "string"}
LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}
Schema = type[BaseModel] | dict[str, Any]


@dataclass(frozen=True)
class Doc:
    """What one handler reads and answers, declared next to it with ``@documented(...)``."""

    body: Schema | None = None  # the JSON request body
    body_required: bool = True
    answer: Schema | None = None  # the JSON body of its success answer
    status: str = "200"
    also: tuple[str, ...] = ()  # other success statuses with the same body (PUT: 200 or 201)
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    text: str | None = None  # media type of a text answer
    json_too: bool = False  # a text answer that can also be JSON (``format=json``)
    not_ready: bool = False  # answers 503 with a status object when the node is not ready


H = TypeVar("H", bound=Callable[..., Any])


def documented(**fields: Any) -> Callable[[H], H]:
    """Declare a handler's request and answer for the OpenAPI document (see ``Doc``)."""
    doc = Doc(**fields)

    def mark(handler: H) -> H:
        handler.__openapi__ = doc  # type: ignore[attr-defined]
        return handler

    return mark


INTERNAL = "/internal/"
NOT_API = ("/", "/ui", "/ui/{path}")  # the web UI's pages and files (nodes/api_ui.py)
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _handler_name(route: web.AbstractRoute) -> str:
    handler = route.handler
    return str(getattr(handler, "__name__", type(handler).__name__))


def _summary(route: web.AbstractRoute, name: str) -> str:
    doc = (route.handler.__doc__ or "").strip().splitlines()
    return doc[0] if doc else name.replace("_", " ")


class _Schemas:
    """Collects component schemas of pydantic models (and their nested definitions)."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
        if isinstance(model, dict):
            return model
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            self.components.setdefault(name, sub)
        self.components.setdefault(model.__name__, schema)
        return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(route: web.AbstractRoute, path: str, schemas: _Schemas) -> dict[str, Any]:
    name = _handler_name(route)
    doc: Doc | None = getattr(route.handler, "__openapi__", None)
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in _PARAM.findall(path)
    ]
    params += [
        {"name": q, "in": "query", "required": False, "schema": schema}
        for q, schema in (doc.query if doc else {}).items()
    ]
    op: dict[str, Any] = {
        "operationId": _operation_id(route.method, path),
        "summary": _summary(route, name),
        "parameters": params,
    }
    error = {"content": {"application/json": {"schema": schemas.ref(ErrorBody)}}}
    responses: dict[str, Any] = {}
    if doc is None:  # undeclared: still listed, loosely
        responses["2XX"] = {"description": "success (JSON, or empty for 204)"}
    elif doc.status == "204":
        responses["204"] = {"description": "done"}
    elif doc.text is not None:
        content: dict[str, Any] = {doc.text: {"schema": {"type": "string"}}}
        if doc.json_too:
            content["application/json"] = {"schema": {"type": "object"}}
        responses[doc.status] = {"description": "text", "content": content}
    else:
        answer = schemas.ref(doc.answer) if doc.answer is not None else {"type": "object"}
        ok = {"description": "success", "content": {"application/json": {"schema": answer}}}
        for status in (doc.status, *doc.also):
            responses[status] = ok
    responses["4XX"] = {"description": "bad input or state", **error}
    if doc is not None and doc.not_ready:
        responses["503"] = {
            "description": "not ready / etcd unreachable",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    else:
        responses["503"] = {"description": "etcd unreachable", **error}
    op["responses"] = responses
    if route.method in ("POST", "PUT", "PATCH") and doc is not None and doc.body is not None:
        op["requestBody"] = {
            "required": doc.body_required,
            "content": {"application/json": {"schema": schemas.ref(doc.body)}},
        }
    return op


def _operation_id(method: str, path: str) -> str:
    words = [w for w in re.split(r"[/{}\-.]+", path) if w and w not in ("api", "v1")]
    return "_".join([method.lower(), *words])


def build_openapi(app: web.Application) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if not path or path.startswith(INTERNAL) or route.method in ("HEAD", "*", "OPTIONS"):
            continue
        path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)
        if path in NOT_API:
            continue
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, path, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cronmesh API",
            "version": __version__,
            "description": "Generated from the route table and the pydantic models of cronmesh.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.components.items()))},
    }
