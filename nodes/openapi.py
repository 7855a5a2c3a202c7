"""The OpenAPI 3.1 document of the HTTP API, built from the live route table and the pydantic
models (served at /api/v1/openapi.json): nothing here lists the routes by hand.

Every route of the application appears, whoever added it. What a route reads and answers is
learnt from the handler: ``BODY``/``ANSWER`` map a handler's name to its pydantic models, and
``QUERY`` to its query parameters; a handler absent from them is still documented (any JSON in,
a JSON object out), so a new route is never missing from the document.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from cluster.models import BackfillRequest, Job, JobSpec, Run, TriggerRequest
from cluster.notify import ProjectNotifications
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


class ProjectList(BaseModel):
    projects: list[str]


class Health(BaseModel):
    status: str
    node: str


class Ready(BaseModel):
    ready: bool
    node: str


# What handlers read (request bodies) and answer (2xx bodies), by handler name.
BODY: dict[str, type[BaseModel] | dict[str, Any]] = {
    "create_job": JobSpec,
    "put_job": JobSpec,
    "patch_job": {"type": "object", "description": "Fields of a job to change"},
    "trigger": TriggerRequest,
    "backfill": BackfillRequest,
    "put_defaults": ProjectNotifications,
}
ANSWER: dict[str, type[BaseModel]] = {
    "healthz": Health,
    "readyz": Ready,
    "list_jobs": JobList,
    "create_job": Job,
    "put_job": Job,
    "patch_job": Job,
    "get_job": Job,
    "trigger": Run,
    "list_runs": RunList,
    "get_run": Run,
    "cancel": Run,
    "list_projects": ProjectList,
    "get_defaults": ProjectNotifications,
    "put_defaults": ProjectNotifications,
}
_INT = {"type": "integer"}
_STR = {"type": "string"}
QUERY: dict[str, dict[str, dict[str, Any]]] = {
    "ticks": {"limit": {**_INT, "minimum": 1, "maximum": 1000}},
    "list_runs": {
        "job": _STR,
        "status": _STR,
        "before": _STR,
        "limit": {**_INT, "minimum": 1, "maximum": 1000},
    },
    "logs": {"attempt": {**_INT, "minimum": 1}, "format": {"enum": ["text", "json"]}},
    "cron_preview": {
        "expr": _STR,
        "timezone": _STR,
        "count": {**_INT, "minimum": 1, "maximum": 50},
    },
}
STATUS: dict[str, str] = {
    "create_job": "201",
    "trigger": "201",
    "cancel": "202",
    "delete_job": "204",
    "delete_defaults": "204",
}
TEXT: dict[str, str] = {"metrics_view": "text/plain", "logs": "text/plain"}
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
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in _PARAM.findall(path)
    ]
    params += [
        {"name": q, "in": "query", "required": False, "schema": schema}
        for q, schema in QUERY.get(name, {}).items()
    ]
    op: dict[str, Any] = {
        "operationId": _operation_id(route.method, path),
        "summary": _summary(route, name),
        "parameters": params,
    }
    error = {"content": {"application/json": {"schema": schemas.ref(ErrorBody)}}}
    # Handlers this module knows answer exactly; others (new modules) are documented as "2XX".
    known = name in STATUS or name in ANSWER or name in TEXT
    status = STATUS.get(name, "200" if known else "2XX")
    if status == "204":
        ok: dict[str, Any] = {"description": "done"}
    elif not known:
        ok = {"description": "success (JSON, or empty for 204)"}
    elif name in TEXT:
        ok = {"description": "text", "content": {TEXT[name]: {"schema": {"type": "string"}}}}
        if name == "logs":
            ok["content"]["application/json"] = {"schema": {"type": "object"}}
    else:
        answer = schemas.ref(ANSWER[name]) if name in ANSWER else {"type": "object"}
        ok = {"description": "success", "content": {"application/json": {"schema": answer}}}
    responses: dict[str, Any] = {status: ok}
    if name == "put_job":
        responses["201"] = ok
    if name in ("readyz", "status"):
        responses["503"] = {
            "description": "not ready / etcd unreachable",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    responses["4XX"] = {"description": "bad input or state", **error}
    responses["503"] = responses.get("503") or {"description": "etcd unreachable", **error}
    op["responses"] = responses
    if route.method in ("POST", "PUT", "PATCH"):
        body = BODY.get(name)
        if body is not None:
            op["requestBody"] = {
                "required": name != "trigger",
                "content": {"application/json": {"schema": schemas.ref(body)}},
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
