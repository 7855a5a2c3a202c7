"""The ``scheduler_shards`` cluster setting (D300) and who leads which shard (D303).

- ``GET /api/v1/settings/scheduler-shards``: ``{"shards": K, "leaders": {"0": node, ...}}``;
- ``PUT /api/v1/settings/scheduler-shards`` ``{"shards": K}`` (cluster admin, as every setting):
  one transaction sets K and deposes every shard leader of the old split; the nodes campaign
  again under the new K within a moment (each shard's ticks resume as after a failover).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel

from cluster.errors import InvalidInput
from cluster.shard_store import read_shards, set_shards, shard_leaders
from cluster.shards import check_count
from nodes.api.http import body_json, ok, require_connected
from nodes.api.openapi import documented

if TYPE_CHECKING:
    from nodes.api.context import ApiContext


class ShardsRequest(BaseModel):
    shards: int


class ShardsState(BaseModel):
    shards: int
    leaders: dict[str, str | None]
    changed: bool | None = None


async def shards_status(node: ApiContext) -> dict[str, Any]:
    """K and the leader of each shard (``/status`` and the setting's GET)."""
    count, _, _ = await read_shards(node.etcd, node.keys)
    leaders = await shard_leaders(node.etcd, node.keys, count)
    return {"shards": count, "leaders": {str(i): n for i, n in leaders.items()}}


class ShardsApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node

    @documented(answer=ShardsState)
    async def get_shards(self, request: web.Request) -> web.Response:
        """How many shards the scheduling loop is split into, and who leads each"""
        require_connected(self.node)
        return ok(await shards_status(self.node))

    @documented(body=ShardsRequest, answer=ShardsState)
    async def put_shards(self, request: web.Request) -> web.Response:
        """Split the scheduling loop into K shards (cluster admin)"""
        data = await body_json(request)
        extra = set(data) - {"shards"}
        if extra:
            field = sorted(extra)[0]
            raise InvalidInput(f"{field}: unknown field", field=field)
        if "shards" not in data:
            raise InvalidInput("shards is required", field="shards")
        count = check_count(data["shards"])
        require_connected(self.node)
        changed = await set_shards(self.node.etcd, self.node.keys, count)
        return ok({**(await shards_status(self.node)), "changed": changed})


def add_routes(app: web.Application, node: ApiContext) -> None:
    api = ShardsApi(node)
    app.router.add_get("/api/v1/settings/scheduler-shards", api.get_shards)
    app.router.add_put("/api/v1/settings/scheduler-shards", api.put_shards)
