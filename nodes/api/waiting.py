"""``GET …/runs?status=waiting``: the pending runs a budget holds back now (D320).

``waiting`` is not a stored status (D276: nothing is written to a held-back run); it is computed
when runs are read. So the filter reads pending runs page by page, annotates them as any listing
does, and keeps those that say why they wait — at most ``MAX_PAGES`` pages of pending runs per
request, then the cursor says where to go on (as every runs listing, the scan is bounded).
"""

from __future__ import annotations

from typing import Any

from cluster.store import Store
from nodes.api import placement as api_placement
from nodes.api.context import ApiContext
from nodes.api.http import dump

WAITING = "waiting"
MAX_PAGES = 10


async def waiting_runs(
    node: ApiContext,
    store: Store,
    project: str,
    *,
    job: str | None,
    contains: str | None,
    since: str | None,
    limit: int,
    before: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first, the pending runs with ``waiting``, and the ``before`` of the next page."""
    out: list[dict[str, Any]] = []
    cursor = before
    for _ in range(MAX_PAGES):
        runs, after = await store.page_runs(
            project,
            job=job,
            status="pending",
            contains=contains,
            since=since,
            limit=limit,
            before=cursor,
        )
        docs = await api_placement.annotate_runs(node, [dump(r) for r in runs])
        for i, doc in enumerate(docs):
            if doc.get(WAITING):
                out.append(doc)
                if len(out) == limit:
                    more = i + 1 < len(docs) or after is not None
                    return out, str(doc["id"]) if more else None
        if after is None:
            return out, None
        cursor = after
    return out, cursor
