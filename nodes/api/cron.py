"""``GET /api/v1/cron/preview``: the next fire times of a cron expression in a time zone.

The web UI's job form calls it as the user types, so the form validates with the very parser the
scheduler uses (cluster/cron.py) instead of a second one in JavaScript.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

from aiohttp import web

from cluster.cron import next_times, parse_schedule, validate_timezone
from cluster.errors import InvalidInput, InvalidSchedule
from nodes.api.http import int_query, ok
from nodes.api.openapi import STR, documented

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

MAX_EXPR = 256


class CronApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node

    @documented(
        query={
            "expr": STR,
            "timezone": STR,
            "count": {"type": "integer", "minimum": 1, "maximum": 50},
        }
    )
    async def cron_preview(self, request: web.Request) -> web.Response:
        """Next fire times of ``expr`` in ``timezone`` (an error names the bad field)."""
        expr = request.query.get("expr", "").strip()
        if not expr:
            raise InvalidInput("expr (a cron expression) is required", field="expr")
        if len(expr) > MAX_EXPR:
            raise InvalidInput(f"expr is longer than {MAX_EXPR} characters", field="expr")
        tz_name = request.query.get("timezone", "").strip() or "UTC"
        count = int_query(request, "count", 5, 1, 50)
        hash_key = request.query.get("hash_key", "")[:200]
        tz = validate_timezone(tz_name)
        try:
            schedule = parse_schedule(cron=expr, timezone=tz_name, hash_key=hash_key)
        except InvalidSchedule as exc:
            field = "timezone" if exc.field == "timezone" else "expr"
            raise InvalidSchedule(exc.message, field=field) from None
        now = self.node.clock().astimezone(UTC)
        times = next_times(schedule, now, count)
        return ok(
            {
                "expr": expr,
                "timezone": tz_name,
                "now": now.isoformat(),
                "times": [t.astimezone(tz).isoformat() for t in times],
            }
        )


def add_routes(app: web.Application, node: ApiContext) -> None:
    app.router.add_get("/api/v1/cron/preview", CronApi(node).cron_preview)
