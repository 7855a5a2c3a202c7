"""What every API module shares: the node key, error answers and middlewares, body and query
parsing, paging. Errors are always ``{"error": {"code", "message", "field"}}`` with a 4xx status
for bad input; they are mapped from ``CronmeshError`` in one middleware."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from cluster.errors import CronmeshError, InvalidInput, NotConnected, TooManyRequests
from cluster.fields import NAME_PATTERN, NAME_RULE
from cluster.ids import is_id
from cluster.store import Store

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

log = structlog.get_logger(__name__)

NODE: web.AppKey[ApiContext] = web.AppKey("node")
NAME_RE = re.compile(NAME_PATTERN)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "field": field}}, status=status
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CronmeshError as exc:
        resp = error_response(exc.status, exc.code, exc.message, exc.field)
        if isinstance(exc, TooManyRequests):
            resp.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "http_error"
        )
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("unhandled error in API handler", path=request.path)
        return error_response(500, "internal", "internal error; see the node's log")


# Path parts that name a document, a run or a file (D160): checked before any handler sees them,
# so no handler can build an etcd key, a spool path or an object key from a bad one.
_NAMED_PARTS = ("project", "job", "workflow")
_ID_PARTS = ("run", "execution")


@web.middleware
async def path_parts_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    info = request.match_info
    for part in _NAMED_PARTS:
        value = info.get(part)
        if part == "project" and value == "*" and request.path.startswith("/api/v1/groups/"):
            continue  # a group granted to every project (D155)
        if value is not None and not NAME_RE.fullmatch(value):
            raise InvalidInput(f"invalid {part} name {value!r}: {NAME_RULE}", field=part)
    for part in _ID_PARTS:
        value = info.get(part)
        if value is not None and not is_id(value):
            raise InvalidInput(f"{part} must be an id (up to 19 digits), not {value!r}", field=part)
    return await handler(request)


@web.middleware
async def body_deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request body must arrive within ``http_body_timeout`` (a slowloris sending its body
    byte by byte): read it here, with the deadline, before anything else reads it (aiohttp keeps
    it for later reads); too slow answers 408 and closes the connection."""
    if request.body_exists:
        timeout = request.app[NODE].config.http_body_timeout
        try:
            async with asyncio.timeout(timeout):
                await request.read()
        except TimeoutError:
            resp = error_response(
                408, "request_timeout", f"the request body did not arrive within {timeout:g} s"
            )
            resp.force_close()
            return resp
    return await handler(request)


def dump(model: Any) -> Any:
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, default=str))


async def body_json(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; with ``optional`` an empty body reads as ``{}``."""
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise InvalidInput("request body must be a JSON object", field=None)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    return data


def named_body(data: dict[str, Any], name: str | None, read_only: Iterable[str]) -> dict[str, Any]:
    """A document's body without its read-only fields; its name is the one in the path, if any."""
    skip = set(read_only)
    data = {k: v for k, v in data.items() if k not in skip}
    if name is not None:
        if "name" in data and data["name"] != name:
            raise InvalidInput(
                f"name {data['name']!r} in the body differs from {name!r} in the path",
                field="name",
            )
        data["name"] = name
    return data


def project_of(request: web.Request) -> str:
    project = request.match_info["project"]
    if not NAME_RE.fullmatch(project):
        raise InvalidInput(f"invalid project name {project!r}", field="project")
    return project


def int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", field=name) from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be within {lo}..{hi}", field=name)
    return value


DEFAULT_PAGE = 500
MAX_PAGE = 1000


def time_query(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 time in the query (UTC when it names no zone), or None."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO 8601 time", field=name) from None
    if when.year < 1970:
        raise InvalidInput(f"{name} is before 1970", field=name)
    if when.year > 9998:  # its zone's offset could carry it past year 9999 (OverflowError)
        raise InvalidInput(f"{name} is after 9998", field=name)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def page_query(request: web.Request) -> tuple[str | None, int]:
    """``after`` (a name: continue after it) and ``limit`` of a paged listing (D161)."""
    after = request.query.get("after") or None
    if after is not None and not NAME_RE.fullmatch(after):
        raise InvalidInput(f"after must be a name, not {after!r}", field="after")
    return after, int_query(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)


def paged(
    request: web.Request,
    items: Iterable[Any],
    name: Callable[[Any], str],
    pattern: re.Pattern[str] = NAME_RE,
) -> tuple[list[Any], str | None]:
    """A page of a list read whole (small ones: users, groups, visible projects) by name, and
    the name to continue ``after``."""
    after = request.query.get("after") or None
    if after is not None and not pattern.fullmatch(after):
        raise InvalidInput(f"after must be a name, not {after!r}", field="after")
    limit = int_query(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    ordered = sorted(items, key=name)
    if after is not None:
        ordered = [i for i in ordered if name(i) > after]
    page = ordered[:limit]
    return page, (name(page[-1]) if len(ordered) > limit else None)


def connected(node: ApiContext) -> bool:
    """Does the node hold an etcd session (also while it drains: readiness is separate)?"""
    session = node.session
    return node.store is not None and session is not None and not session.lost.is_set()


def require_connected(node: ApiContext) -> None:
    """The one "connected to etcd?" guard: ``NotConnected`` (503 ``not_connected``) if not."""
    if not connected(node):
        raise NotConnected()


def require_store(node: ApiContext) -> Store:
    """The node's store while it holds an etcd session; else ``NotConnected`` (503)."""
    require_connected(node)
    assert node.store is not None
    return node.store
