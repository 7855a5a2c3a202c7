"""``GET /api/v1/plan?from=&to=&project=&limit=``: the schedule simulator (cluster.simulate,
D240). ``from`` and ``to`` are instants (ISO 8601 with an offset; ``from`` defaults to now,
``to`` to an hour after ``from``; at most 7 days apart); without ``project`` it covers every
project the caller may view. Bounded: at most MAX_PLAN_JOBS jobs read, ``limit`` slots listed.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from aiohttp import web

from cluster.calendar_store import CalendarStore
from cluster.errors import Forbidden, InvalidInput, TooManyRequests
from cluster.models import NAME_PATTERN, Job
from cluster.permissions import role_on
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
        jobs: list[Job] = []
        more = False
        async for page in store.etcd.range_pages(store.keys.jobs(project)):
            for kv in page.kvs:
                if len(jobs) >= MAX_PLAN_JOBS:
                    more = True
                    break
                job = Job.model_validate_json(kv.value)
                if project is not None or role_on(grants, job.project) >= 0:
                    jobs.append(job)
            if more:
                break
        calendars = CalendarStore(store.etcd, store.keys, store.clock)
        rules = await calendars.load_rules([project] if project else None)
        if self.running >= MAX_CONCURRENT:
            raise TooManyRequests(
                f"{self.running} plans are being computed on this node; retry in a moment",
                retry_after=1.0,
            )
        self.running += 1
        try:  # CPU work (up to ~1 s): in a thread, so the node keeps answering meanwhile
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


def add_routes(app: web.Application, node: ApiContext) -> None:
    app.router.add_get("/api/v1/plan", PlanApi(node).plan)
