"""HTTP routes of budgets (D274): cluster-wide limits on starts per window and runs at once.

Routes:
  GET    /api/v1/budgets?limit=&after=   documents with their use, paged by name (any user)
  GET    /api/v1/budgets/{budget}        one, with its use (any user)
  PUT    /api/v1/budgets/{budget}        create or replace (cluster admin)
  DELETE /api/v1/budgets/{budget}        409 while a job or workflow names it (cluster admin)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel

from cluster.budget_store import BudgetStore
from cluster.budgets import Budget, BudgetSpec, joined, per_text
from cluster.errors import InvalidInput
from cluster.fields import NAME_PATTERN
from nodes.api.access import PRINCIPAL
from nodes.api.http import body_json, int_query, named_body, ok, require_connected
from nodes.api.openapi import LIMIT, STR, documented

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

NAME_RE = re.compile(NAME_PATTERN)
READ_ONLY = ("created_at", "updated_at", "updated_by", "use")


class StartsUse(BaseModel):
    window_start: str
    window_end: str
    count: int
    limit: int


class BudgetUse(BaseModel):
    """What a budget holds now: ``running`` of ``concurrent`` slots, starts in this window."""

    running: int | None = None
    concurrent: int | None = None
    starts: StartsUse | None = None


class BudgetDoc(Budget):
    use: BudgetUse


class BudgetList(BaseModel):
    budgets: list[BudgetDoc]
    next: str | None = None


def budget_name(request: web.Request) -> str:
    name = request.match_info["budget"]
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(f"invalid budget name {name!r}", field="name")
    return name


class BudgetApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node

    def store(self) -> BudgetStore:
        require_connected(self.node)
        return BudgetStore(self.node.etcd, self.node.keys, self.node.clock)

    async def _doc(self, store: BudgetStore, budget: Budget) -> dict[str, Any]:
        doc = budget.model_dump(mode="json")
        doc["use"] = await store.usage(budget)
        return doc

    @documented(answer=BudgetList, query={"limit": LIMIT, "after": STR})
    async def list_budgets(self, request: web.Request) -> web.Response:
        """List budgets with their use, paged by name"""
        limit = int_query(request, "limit", 100, 1, 1000)
        after = request.query.get("after") or None
        if after is not None and not NAME_RE.fullmatch(after):
            raise InvalidInput("after must be a budget name", field="after")
        store = self.store()
        items, nxt = await store.list_page(limit=limit, after=after)
        uses = await store.usages(items)
        docs = [
            {**b.model_dump(mode="json"), "use": use} for b, use in zip(items, uses, strict=True)
        ]
        return ok({"budgets": docs, "next": nxt})

    @documented(answer=BudgetDoc)
    async def get_budget(self, request: web.Request) -> web.Response:
        """One budget with its use (slots held, starts in the current window)"""
        store = self.store()
        return ok(await self._doc(store, await store.get(budget_name(request))))

    @documented(body=BudgetSpec, answer=BudgetDoc, also=("201",))
    async def put_budget(self, request: web.Request) -> web.Response:
        """Create or replace a budget"""
        name = budget_name(request)
        data = named_body(await body_json(request), name, READ_ONLY)
        who = request[PRINCIPAL].name if PRINCIPAL in request else None
        store = self.store()
        budget, created = await store.put(data, who)
        return ok(await self._doc(store, budget), 201 if created else 200)

    @documented(status="204")
    async def delete_budget(self, request: web.Request) -> web.Response:
        """Delete a budget no job or workflow names"""
        await self.store().delete(budget_name(request))
        return web.Response(status=204)


STATUS_BUDGETS = 100  # budgets /status shows (the rest: GET /api/v1/budgets, paged)


async def budget_status(node: ApiContext) -> dict[str, Any]:
    """The use of the first budgets by name, for ``/status``."""
    store = BudgetStore(node.etcd, node.keys, node.clock)
    items, nxt = await store.list_page(limit=STATUS_BUDGETS, after=None)
    uses = await store.usages(items)
    return {
        "budgets": [{"name": b.name, **use} for b, use in zip(items, uses, strict=True)],
        "more": nxt is not None,
    }


async def annotate_waits(node: ApiContext, pending: list[dict[str, Any]]) -> None:
    """Add ``waiting`` (``budget b: 3/3 running``, ``… next start allowed at …``) to the pending
    runs a budget holds back now; read once per budget (D276)."""
    with_budgets = [
        d
        for d in pending
        if isinstance(d.get("snapshot"), dict)
        and (d["snapshot"].get("budgets") or d["snapshot"].get("tags"))
    ]
    if not with_budgets:
        return
    store = BudgetStore(node.etcd, node.keys, node.clock)
    res = await node.etcd.range_all(node.keys.budgets())
    docs: dict[str, Budget] = {}
    for kv in res.kvs:
        b = Budget.model_validate_json(kv.value)
        docs[b.name] = b
    use: dict[str, dict[str, Any]] = {}
    for doc in with_budgets:
        snap = doc["snapshot"]
        project = str(doc.get("project") or "")
        for name in joined(docs, snap.get("budgets") or [], snap.get("tags") or [], project):
            if name not in use:
                use[name] = await store.usage(docs[name])
            reason = waiting_reason(name, docs[name], use[name], project)
            if reason is not None:
                doc["waiting"] = reason
                break


def waiting_reason(name: str, budget: Budget, use: dict[str, Any], project: str) -> str | None:
    if not budget.admits(project):
        return f"budget {name}: not open to project {project}"
    if budget.concurrent is not None and use["running"] >= budget.concurrent:
        return f"budget {name}: {use['running']}/{budget.concurrent} running"
    starts = use.get("starts")
    if budget.starts is not None and starts and starts["count"] >= budget.starts.limit:
        return (
            f"budget {name}: {starts['count']}/{budget.starts.limit} starts per "
            f"{per_text(budget.starts)}, next start allowed at {starts['window_end']}"
        )
    return None


def add_routes(app: web.Application, node: ApiContext) -> None:
    api = BudgetApi(node)
    base = "/api/v1/budgets"
    r = app.router
    r.add_get(base, api.list_budgets)
    r.add_get(base + "/{budget}", api.get_budget)
    r.add_put(base + "/{budget}", api.put_budget)
    r.add_delete(base + "/{budget}", api.delete_budget)
