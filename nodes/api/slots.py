"""``GET …/jobs/{job}/slots``: a job's slots, newest first, each with its outcome and reason, and
the page summed up: "ran N of the last M slots", by outcome, and the late or missed ones (D233).

Paged by ``before`` (the ``name`` of the oldest slot of the previous page). Slots the leader
missed in an outage are not one record each (D7: spans in the schedule state); the summary adds
the spans that end inside the page's time range.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cluster.depends_store import waiting_view
from cluster.errors import InvalidInput
from cluster.models import Job
from cluster.outcomes import MISSED_OUTAGE, OUTCOMES, outcome_of_fate, outcome_of_record, summarize
from cluster.store import Store
from cluster.workflow_store import WorkflowStore
from cluster.workflows import Workflow
from nodes.api.http import int_query, ok, project_of, require_store
from nodes.api.openapi import LIMIT, STR, documented

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

WAITING_SHOWN = 10  # waiting slots of a page whose upstreams are read (a few reads each)
SLOT_NAME = re.compile(r"^\d{15}-[A-Za-z0-9_-]{1,64}$")


def with_outcome(record: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """A tick record as the API shows it: its outcome (derived for records written before
    outcomes existed), whether it is still open, and its name (the paging cursor)."""
    out = dict(record)
    out["outcome"] = outcome_of_record(record)
    out["open"] = out["outcome"] is None
    out.setdefault("reason", "")
    if name is not None:
        out["name"] = name
    return out


def event_outcome(event: dict[str, Any]) -> dict[str, Any]:
    """A span of ticks that did not fire (schedule state events) with its outcome."""
    return {**event, "outcome": outcome_of_fate(str(event.get("fate", "")))}


class SlotsApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node

    @documented(query={"limit": LIMIT, "before": STR})
    async def slots(self, request: web.Request) -> web.Response:
        """A job's slots with outcomes (newest first, paged) and "ran N of the last M"."""
        project, name = project_of(request), request.match_info["job"]
        store = require_store(self.node)
        job = await store.get_job(project, name)  # 404 for an unknown job
        page = await self._page(request, store, store.keys.ticks(project, name), name, True)
        return ok(await self._waiting(store, page, job))

    @staticmethod
    async def _waiting(store: Store, page: dict[str, Any], doc: Job | Workflow) -> dict[str, Any]:
        """A waiting slot shows what it waits for (D295): the first few of the page, live."""
        waiting = [s for s in page["slots"] if s.get("waiting") and s["open"]][:WAITING_SHOWN]
        for rec in waiting:
            try:
                rec["waiting_for"] = await waiting_view(
                    store.etcd, store.keys, doc, rec["name"], store.clock()
                )
            except (ValueError, KeyError, TypeError) as exc:  # a record this version cannot read
                rec["waiting_for"] = {"error": f"its upstreams cannot be read: {str(exc)[:200]}"}
        return page

    @documented(query={"limit": LIMIT, "before": STR})
    async def workflow_slots(self, request: web.Request) -> web.Response:
        """A workflow's slots with outcomes (newest first, paged) and "ran N of the last M"."""
        project, name = project_of(request), request.match_info["workflow"]
        store = require_store(self.node)
        wf, _ = await WorkflowStore(store).get_workflow_kv(project, name)  # 404: unknown
        base = store.keys.workflow_ticks(project, name)
        page = await self._page(request, store, base, name, False)
        return ok(await self._waiting(store, page, wf))

    async def _page(
        self, request: web.Request, store: Store, base: str, name: str, spans: bool
    ) -> dict[str, Any]:
        limit = int_query(request, "limit", 50, 1, 1000)
        before = request.query.get("before") or None
        if before is not None and not SLOT_NAME.fullmatch(before):
            raise InvalidInput(f"before must be a slot name, not {before!r}", field="before")
        res = await store.etcd.range(
            base,
            prefix=before is None,
            end=base + before if before else None,
            limit=limit + 1,
            descending=True,
        )
        kvs = res.kvs[:limit]
        records = [with_outcome(json.loads(kv.value), kv.key[len(base) :]) for kv in kvs]
        summary = summarize(records)
        if records and before is None and spans:
            # outage misses are spans in the schedule state: count those ending in this page
            oldest = datetime.fromisoformat(records[-1]["tick"])
            state = await store.schedule_state(project_of(request), name)
            for ev in state.get("events", []):
                if ev.get("fate") != "missed" or datetime.fromisoformat(ev["last"]) < oldest:
                    continue
                count = int(ev.get("count", 0))
                summary["slots"] += count
                counts = summary["outcomes"]
                counts[MISSED_OUTAGE.name] = counts.get(MISSED_OUTAGE.name, 0) + count
        late = summary.pop("late")
        return {
            "name": name,
            "summary": summary,
            "late": late,
            "slots": records,
            "next": records[-1]["name"] if len(res.kvs) > limit else None,
            "outcomes": {k: v.description for k, v in OUTCOMES.items()},
        }


def add_routes(app: web.Application, node: ApiContext) -> None:
    api = SlotsApi(node)
    app.router.add_get("/api/v1/projects/{project}/jobs/{job}/slots", api.slots)
    app.router.add_get("/api/v1/projects/{project}/workflows/{workflow}/slots", api.workflow_slots)
