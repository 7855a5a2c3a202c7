"""HTTP routes of calendars, blackout windows and the cluster freeze (issue 21, D236-D239).

Routes (``{scope}``: ``/api/v1`` for the cluster's, ``/api/v1/projects/{project}`` for a
project's):
  GET    {scope}/calendars?limit=&after=      paged by name
  GET    {scope}/calendars/{name}
  PUT    {scope}/calendars/{name}             the calendar document (cluster.calendars)
  DELETE {scope}/calendars/{name}             409 while a job's schedule names it
  GET    {scope}/blackouts?limit=&after=
  GET    {scope}/blackouts/{name}
  PUT    {scope}/blackouts/{name}             the window document (cluster.blackouts)
  DELETE {scope}/blackouts/{name}
  GET    /api/v1/freeze                       {"frozen": bool, "note", "by", "at"}
  PUT    /api/v1/freeze                       {"note": "…"} (cluster admin)
  DELETE /api/v1/freeze                       unfreeze (cluster admin)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel

from cluster.blackouts import WindowSpec
from cluster.calendar_store import CalendarStore
from cluster.calendars import CalendarSpec
from cluster.errors import InvalidInput
from cluster.fields import NAME_PATTERN
from cluster.models import parse_model
from cluster.slotrules import CLUSTER
from nodes.api.access import PRINCIPAL
from nodes.api.http import body_json, int_query, named_body, ok, project_of, require_store
from nodes.api.openapi import LIMIT, STR, documented

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

NAME_RE = re.compile(NAME_PATTERN)
READ_ONLY = ("scope", "created_at", "updated_at", "updated_by")


class StoredCalendar(CalendarSpec):
    scope: str
    created_at: str
    updated_at: str
    updated_by: str | None = None


class StoredWindow(WindowSpec):
    scope: str
    created_at: str
    updated_at: str
    updated_by: str | None = None


class CalendarList(BaseModel):
    calendars: list[dict[str, Any]]
    next: str | None = None


class WindowList(BaseModel):
    blackouts: list[dict[str, Any]]
    next: str | None = None


class FreezeRequest(BaseModel):
    note: str


class FreezeState(BaseModel):
    frozen: bool
    note: str | None = None
    by: str | None = None
    at: str | None = None


def _scope(request: web.Request) -> str:
    return project_of(request) if "project" in request.match_info else CLUSTER


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(f"invalid name {name!r}: [a-z0-9][a-z0-9-_.]{{0,62}}", field="name")
    return name


def _after(request: web.Request) -> str | None:
    after = request.query.get("after") or None
    if after is not None and not NAME_RE.fullmatch(after):
        raise InvalidInput("after must be a name", field="after")
    return after


def _actor(request: web.Request) -> str | None:
    return request[PRINCIPAL].name if PRINCIPAL in request else None


class CalendarApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node

    def store(self) -> CalendarStore:
        store = require_store(self.node)
        return CalendarStore(store.etcd, store.keys, store.clock)

    # -- calendars -----------------------------------------------------------------------------

    @documented(answer=CalendarList, query={"limit": LIMIT, "after": STR})
    async def list_calendars(self, request: web.Request) -> web.Response:
        """List the calendars of a project or of the cluster"""
        limit = int_query(request, "limit", 100, 1, 1000)
        items, nxt = await self.store().list_calendars(
            _scope(request), limit=limit, after=_after(request)
        )
        return ok({"calendars": items, "next": nxt})

    @documented(answer=StoredCalendar)
    async def get_calendar(self, request: web.Request) -> web.Response:
        """One calendar"""
        return ok(await self.store().get_calendar(_scope(request), _name(request)))

    @documented(body=CalendarSpec, answer=StoredCalendar, also=("201",))
    async def put_calendar(self, request: web.Request) -> web.Response:
        """Create or replace a calendar"""
        name = _name(request)
        spec = parse_model(CalendarSpec, named_body(await body_json(request), name, READ_ONLY))
        doc, created = await self.store().put_calendar(_scope(request), spec, _actor(request))
        return ok(doc, 201 if created else 200)

    @documented(status="204")
    async def delete_calendar(self, request: web.Request) -> web.Response:
        """Delete a calendar no job names"""
        await self.store().delete_calendar(_scope(request), _name(request))
        return web.Response(status=204)

    # -- blackout windows ----------------------------------------------------------------------

    @documented(answer=WindowList, query={"limit": LIMIT, "after": STR})
    async def list_windows(self, request: web.Request) -> web.Response:
        """List the blackout windows of a project or of the cluster"""
        limit = int_query(request, "limit", 100, 1, 1000)
        items, nxt = await self.store().list_windows(
            _scope(request), limit=limit, after=_after(request)
        )
        return ok({"blackouts": items, "next": nxt})

    @documented(answer=StoredWindow)
    async def get_window(self, request: web.Request) -> web.Response:
        """One blackout window"""
        return ok(await self.store().get_window(_scope(request), _name(request)))

    @documented(body=WindowSpec, answer=StoredWindow, also=("201",))
    async def put_window(self, request: web.Request) -> web.Response:
        """Create or replace a blackout window"""
        name = _name(request)
        spec = parse_model(WindowSpec, named_body(await body_json(request), name, READ_ONLY))
        doc, created = await self.store().put_window(_scope(request), spec, _actor(request))
        return ok(doc, 201 if created else 200)

    @documented(status="204")
    async def delete_window(self, request: web.Request) -> web.Response:
        """Delete a blackout window"""
        await self.store().delete_window(_scope(request), _name(request))
        return web.Response(status=204)

    # -- freeze ----------------------------------------------------------------------------------

    @documented(answer=FreezeState)
    async def get_freeze(self, request: web.Request) -> web.Response:
        """Whether the cluster is frozen, and why"""
        state = await self.store().freeze_state()
        return ok({"frozen": state is not None, **(state or {})})

    @documented(body=FreezeRequest, answer=FreezeState)
    async def put_freeze(self, request: web.Request) -> web.Response:
        """Freeze the cluster: every slot is skipped until unfrozen"""
        data = await body_json(request)
        extra = set(data) - {"note"}
        if extra:
            field = sorted(extra)[0]
            raise InvalidInput(f"{field}: unknown field", field=field)
        state = await self.store().freeze(data.get("note", ""), _actor(request))
        return ok({"frozen": True, **state})

    @documented(answer=FreezeState)
    async def delete_freeze(self, request: web.Request) -> web.Response:
        """Unfreeze the cluster"""
        await self.store().unfreeze()
        return ok({"frozen": False})


def add_routes(app: web.Application, node: ApiContext) -> None:
    api = CalendarApi(node)
    r = app.router
    for base in ("/api/v1", "/api/v1/projects/{project}"):
        r.add_get(f"{base}/calendars", api.list_calendars)
        r.add_get(f"{base}/calendars/{{name}}", api.get_calendar)
        r.add_put(f"{base}/calendars/{{name}}", api.put_calendar)
        r.add_delete(f"{base}/calendars/{{name}}", api.delete_calendar)
        r.add_get(f"{base}/blackouts", api.list_windows)
        r.add_get(f"{base}/blackouts/{{name}}", api.get_window)
        r.add_put(f"{base}/blackouts/{{name}}", api.put_window)
        r.add_delete(f"{base}/blackouts/{{name}}", api.delete_window)
    r.add_get("/api/v1/freeze", api.get_freeze)
    r.add_put("/api/v1/freeze", api.put_freeze)
    r.add_delete("/api/v1/freeze", api.delete_freeze)
