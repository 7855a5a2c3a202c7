"""``GET /api/v1/plan?from=&to=&project=&limit=``: the schedule simulator (cluster.simulate,
D240). ``from`` and ``to`` are instants (ISO 8601 with an offset; ``from`` defaults to now,
``to`` to an hour after ``from``; at most 7 days apart); without ``project`` it covers every
project the caller may view. Bounded: at most MAX_PLAN_JOBS jobs read, ``limit`` slots listed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cluster.calendar_store import CalendarStore
from cluster.errors import Forbidden, InvalidInput, TooManyRequests
from cluster.fields import NAME_PATTERN
from cluster.models import Job
from cluster.permissions import ALL_PROJECTS, role_on
from cluster.simulate import MAX_SLOTS, MAX_WINDOW, simulate
from nodes.api.access import principal
from nodes.api.http import int_query, ok, require_store
from nodes.api.openapi import STR, documented

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

MAX_PLAN_JOBS = 5000
MAX_CONCURRENT = 2  # plans computed at once on one node (more: 429)


def instant(request: web.Request, name: str, default: datetime) -> datetime:
    """An ISO 8601 instant from the query (an offset is required), or ``default``."""
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = datetime.fromisoformat(text.replace(" ", "+"))  # '+' decoded as a space
    except ValueError:
        raise InvalidInput(
            f"{name}: {text[:64]!r} is not an instant (ISO 8601, e.g. 2026-12-24T18:00:00Z)",
            field=name,
        ) from None
    if value.tzinfo is None:
        raise InvalidInput(
            f"{name}: {text[:64]!r} has no offset, so it is not an instant (add Z or +01:00)",
            field=name,
        )
    if not 1970 <= value.year <= 9998:
        raise InvalidInput(f"{name}: must lie between the years 1970 and 9998", field=name)
    return value


class PlanApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node
        self.running = 0

    @documented(
        query={"from": STR, "to": STR, "project": STR, "limit": {"type": "integer", "minimum": 1}}
    )
    async def plan(self, request: web.Request) -> web.Response:
        """Simulate every job's slots in a window: outcomes, starts per minute, crowd warnings"""
        store = require_store(self.node)
        start = instant(request, "from", store.clock())
        end = instant(request, "to", start + timedelta(hours=1))
        if end <= start:
            raise InvalidInput("to: must be after from", field="to")
        if end - start > MAX_WINDOW:
            raise InvalidInput(f"to: at most {MAX_WINDOW.days} days after from", field="to")
        limit = int_query(request, "limit", 1000, 1, MAX_SLOTS)
        project = request.query.get("project") or None
        grants = principal(request).user.roles
        if project is not None:
            if not re.fullmatch(NAME_PATTERN, project):
                raise InvalidInput("project: not a project name", field="project")
            if role_on(grants, project) < 0:
                raise Forbidden(f"no role on project {project!r}", field="project")
        if self.running >= MAX_CONCURRENT:  # before the reads: they cost as much as the walk
            raise TooManyRequests(
                f"{self.running} plans are being computed on this node; retry in a moment",
                retry_after=1.0,
            )
        self.running += 1
        try:
            jobs, more = await self._jobs(store, scopes(grants, project))
            calendars = CalendarStore(store.etcd, store.keys, store.clock)
            rules = await calendars.load_rules(
                None
                if project is None and all_projects(grants)
                else sorted({j.project for j in jobs})
            )
            # CPU work (up to ~1 s): in a thread, so the node keeps answering meanwhile
            sim = await asyncio.to_thread(simulate, jobs, rules, start, end, limit=limit)
        finally:
            self.running -= 1
        answer = sim.answer()
        answer.update(
            {
                "from": start.isoformat(),
                "to": end.isoformat(),
                "project": project,
                "jobs": len(jobs),
                "truncated": sim.truncated or more,
                "frozen": rules.freeze is not None,
            }
        )
        return ok(answer)

    async def _jobs(self, store: Any, prefixes: list[str | None]) -> tuple[list[Job], bool]:
        """The jobs under ``prefixes`` (projects; None: every project), at most MAX_PLAN_JOBS
        read in all: a viewer of one project no longer makes the node read and parse every
        project's jobs to keep its own (D287)."""
        jobs: list[Job] = []
        for prefix in prefixes:
            async for page in store.etcd.range_pages(store.keys.jobs(prefix)):
                for kv in page.kvs:
                    if len(jobs) >= MAX_PLAN_JOBS:
                        return jobs, True
                    jobs.append(Job.model_validate_json(kv.value))
        return jobs, False


def all_projects(grants: Mapping[str, str]) -> bool:
    """Does a role on every project (``*``) let the caller see every project's jobs?"""
    return role_on(grants, None) >= 0


def scopes(grants: Mapping[str, str], project: str | None) -> list[str | None]:
    """The job prefixes a plan reads: the project asked for (its role checked before), every
    project (None) for a cluster-wide role, else the projects the caller has a role on — never
    the whole cluster to filter it afterwards (D287)."""
    if project is not None:
        return [project]
    if all_projects(grants):
        return [None]
    return sorted(p for p in grants if p != ALL_PROJECTS and role_on(grants, p) >= 0)


def add_routes(app: web.Application, node: ApiContext) -> None:
    app.router.add_get("/api/v1/plan", PlanApi(node).plan)
