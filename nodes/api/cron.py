"""``GET /api/v1/cron/preview``: the next fire times of a cron expression in a time zone, under a
DST policy, each flagged when it is next to a daylight-saving transition (D223).

The web UI's job form calls it as the user types, so the form validates with the very parser the
scheduler uses (cluster/cron.py) instead of a second one in JavaScript.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cluster.cron import DstPolicy, next_times, parse_schedule, validate_timezone
from cluster.cron_dst import fire_flags, transition_warnings
from cluster.errors import InvalidInput, InvalidSchedule
from nodes.api.http import int_query, ok
from nodes.api.openapi import STR, documented

if TYPE_CHECKING:
    from cluster.models import ScheduleSpec
    from nodes.api.context import ApiContext

MAX_EXPR = 256
MAX_FROM = 64


def _instant(raw: str | None, default: datetime) -> datetime:
    """The ``from`` query value: an ISO 8601 instant (with an offset or ``Z``)."""
    if raw is None or not raw.strip():
        return default
    if len(raw) > MAX_FROM:
        raise InvalidInput(f"from is longer than {MAX_FROM} characters", field="from")
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput(
            "from must be an ISO 8601 instant such as 2026-11-01T05:00:00Z", field="from"
        ) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            "from must be an instant: add an offset (+01:00) or Z to the time", field="from"
        )
    if not 1970 <= value.year <= 9000:
        raise InvalidInput("from must lie between the years 1970 and 9000", field="from")
    return value.astimezone(UTC)


def _never_fires(field: str, spec: ScheduleSpec) -> dict[str, Any]:
    if spec.cron is not None:
        message = (
            f"{spec.cron!r} never fires: no date matches all its fields (such as day 30 of"
            " February); check its day-of-month, month and day-of-week fields"
        )
    else:  # a one-shot `at` at or before the save: past instants are not caught up (D6)
        message = (
            f"at {spec.at.isoformat() if spec.at else ''} is not after now: a one-shot schedule"
            " fires only at an instant after it is saved"
        )
    return {"field": field, "code": "never_fires", "message": message}


def with_dst_warnings(
    doc: dict[str, Any], schedules: Iterable[ScheduleSpec], hash_key: str, now: datetime
) -> dict[str, Any]:
    """The answer to saving a job or workflow: ``doc`` plus ``warnings`` when a fixed time of
    an enabled schedule falls in a DST transition in the coming year (D223), or when a cron or
    ``at`` schedule never fires at all (``0 0 30 2 *``, an ``at`` in the past: code
    ``never_fires``, D507)."""
    parsed = [
        (f"schedules.{i}", spec, spec.parse(hash_key))
        for i, spec in enumerate(schedules)
        if spec.enabled and (spec.cron is not None or spec.at is not None)
    ]
    warnings = [
        _never_fires(field, spec)
        for field, spec, schedule in parsed
        if schedule.next_after(now) is None
    ]
    crons = [(field, sched) for field, spec, sched in parsed if spec.cron is not None]
    warnings += transition_warnings(crons, now)
    return {**doc, "warnings": warnings} if warnings else doc


class CronApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node

    @documented(
        query={
            "expr": STR,
            "timezone": STR,
            "from": {"type": "string", "format": "date-time"},
            "count": {"type": "integer", "minimum": 1, "maximum": 50},
            "dst_gap": {"type": "string", "enum": ["shift", "skip"]},
            "dst_fold": {"type": "string", "enum": ["auto", "first", "both"]},
        }
    )
    async def cron_preview(self, request: web.Request) -> web.Response:
        """Next fire times of ``expr`` in ``timezone`` after ``from`` (an error names the field)."""
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
            dst = DstPolicy.of(
                request.query.get("dst_gap") or None, request.query.get("dst_fold") or None
            )
        except InvalidSchedule as exc:
            name = "dst_gap" if exc.field == "dst.gap" else "dst_fold"
            raise InvalidInput(exc.message.replace(exc.field or "", name), field=name) from None
        start = _instant(request.query.get("from"), self.node.clock().astimezone(UTC))
        try:
            schedule = parse_schedule(cron=expr, timezone=tz_name, hash_key=hash_key, dst=dst)
        except InvalidSchedule as exc:
            field = "timezone" if exc.field == "timezone" else "expr"
            raise InvalidSchedule(exc.message, field=field) from None
        times = next_times(schedule, start, count)
        flags = fire_flags(schedule, start, times)
        return ok(
            {
                "expr": expr,
                "timezone": tz_name,
                "now": self.node.clock().astimezone(UTC).isoformat(),
                "from": start.isoformat(),
                "dst": {"gap": dst.gap, "fold": dst.fold},
                "times": [t.astimezone(tz).isoformat() for t in times],
                "fires": [
                    {"time": t.astimezone(tz).isoformat(), "dst": flag}
                    for t, flag in zip(times, flags, strict=True)
                ],
            }
        )


def add_routes(app: web.Application, node: ApiContext) -> None:
    app.router.add_get("/api/v1/cron/preview", CronApi(node).cron_preview)
