"""HTTP API of placement: nodes (list, admin state, remote shutdown), groups and bindings, and
why a pending run waits.

Routes:
  GET    /api/v1/nodes                      every node ever seen, with state and load
  GET    /api/v1/nodes/{node}
  POST   /api/v1/nodes/{node}/enable|disable|drain|shutdown
  DELETE /api/v1/nodes/{node}               forget a node that is down
  GET    /api/v1/groups                     groups with their bindings
  GET    /api/v1/groups/{group}
  PUT    /api/v1/groups/{group}             {"description", "tags"}
  DELETE /api/v1/groups/{group}             the group and its bindings
  PUT    /api/v1/groups/{group}/bindings/{binding}   {"node", "weight"}
  DELETE /api/v1/groups/{group}/bindings/{binding}
  PUT    /api/v1/groups/{group}/projects/{project}   grant the group to a project ("*": all)
  DELETE /api/v1/groups/{group}/projects/{project}   revoke it
  GET    /api/v1/placement?group=&selector=&project=  where a target's runs would go now
  GET    /api/v1/projects/{project}/targets  the groups and nodes a project's runs may reach
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from cluster.errors import Conflict, InvalidInput, NotConnected
from cluster.fields import NAME_PATTERN, NAME_RULE
from cluster.groups import (
    NODE_ID_PATTERN,
    PROJECT_OR_ALL,
    BindingSpec,
    GroupSpec,
    GroupStore,
    NodeNotFound,
)
from cluster.models import parse_model
from cluster.permissions import RANK, role_on
from cluster.placement import (
    Placement,
    admin_status,
    attempt_key,
    for_target,
    place,
    preferred,
)
from cluster.runas import project_refusal
from nodes.api.access import principal
from nodes.api.budgets import annotate_waits
from nodes.api.shards import shards_status
from nodes.executor.runas import project_run_as_users
from nodes.worker.cluster_view import read_topology

if TYPE_CHECKING:
    from cluster.etcd import Etcd
    from cluster.keys import Keys
    from nodes.api.context import ApiContext

log = structlog.get_logger(__name__)

NAME_RE = re.compile(NAME_PATTERN)
_NODE = re.compile(NODE_ID_PATTERN)
_PROJECT_OR_ALL = re.compile(PROJECT_OR_ALL)
NODE_ACTIONS = ("enable", "disable", "drain", "shutdown")


def _json(data: Any, status: int = 200) -> web.Response:
    from nodes.api.http import ok

    return ok(data, status)


def _name(request: web.Request, part: str, field: str) -> str:
    value = request.match_info[part]
    if not NAME_RE.fullmatch(value):
        raise InvalidInput(f"invalid {field} name {value!r}: {NAME_RULE}", field=field)
    return value


def _node_id(request: web.Request) -> str:
    value = request.match_info["node"]
    if not _NODE.fullmatch(value):
        raise InvalidInput(f"invalid node id {value!r}", field="node")
    return value


def placement_doc(draw: str | None, placement: Placement) -> dict[str, Any]:
    """What the API shows about where a run goes (or why it cannot go anywhere)."""
    best = preferred(draw, placement.candidates) if draw else None
    return {
        "candidates": [
            {"node": c.node, "weight": c.weight, "binding": c.binding} for c in placement.candidates
        ],
        "preferred": best.node if best else None,
        "reason": placement.reason,
    }


async def annotate_runs(node: ApiContext, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``placement`` (candidates, preferred node, ``no eligible node: …``) to pending runs."""
    pending = [d for d in docs if d.get("status") == "pending"]
    if not pending:
        return docs
    topo, _ = await read_topology(node.etcd, node.keys)
    allowed: dict[str, list[str]] = {}  # project -> run_as_users, read once per project
    for doc in pending:
        snapshot = doc.get("snapshot") or {}
        target = snapshot.get("target") or {}
        project = str(doc.get("project") or "") or None
        user = (snapshot.get("run_as") or {}).get("user")
        placement = place(target.get("group"), target.get("selector") or "", topo, project, user)
        if user is not None and project is not None:
            if project not in allowed:
                allowed[project] = await project_run_as_users(node.etcd, node.keys, project)
            refusal = project_refusal(project, user, allowed[project])
            if refusal is not None:
                placement = Placement((), f"no eligible node: {refusal}")
        draw = attempt_key(str(doc.get("id")), int(doc.get("attempt") or 1))
        doc["placement"] = placement_doc(draw, placement)
    await annotate_waits(node, pending)  # held back by a budget: says which, and why (D276)
    return docs


async def read_loads(etcd: Etcd, keys: Keys, revision: int) -> dict[str, dict[str, Any]]:
    """Each live node's published load (``nodes/daemon/load.py``): leased, so only live ones."""
    res = await etcd.range_all(keys.node_loads(), revision=revision)
    out: dict[str, dict[str, Any]] = {}
    for kv in res.kvs:
        with contextlib.suppress(ValueError):
            doc = json.loads(kv.value)
            if isinstance(doc, dict):
                out[kv.key.rsplit("/", 1)[-1]] = doc
    return out


def loads_for(request: web.Request, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A node's load (what every project's runs use there, D257) is a cluster-wide read-out,
    like /status: shown to a role on ``*``; a user of some projects gets ``load: null`` (D322)."""
    if role_on(principal(request).user.roles, None) >= RANK["viewer"]:
        return nodes
    return [{**doc, "load": None} for doc in nodes]


def _instant(iso: str) -> datetime:
    when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class PlacementApi:
    def __init__(self, node: ApiContext) -> None:
        self._seen: dict[str, str] = {}  # node id -> the last heartbeat seen, bounded by nodes
        self.node = node

    def groups(self) -> GroupStore:
        node = self.node
        if node.session is None or node.session.lost.is_set():
            raise NotConnected()
        return GroupStore(node.etcd, node.keys, node.clock)

    # -- nodes ---------------------------------------------------------------------------------

    async def node_list(self) -> list[dict[str, Any]]:
        node = self.node
        topo, raw = await read_topology(node.etcd, node.keys)
        running: dict[str, int] = {}
        used: dict[str, int] = {}
        for claim in raw["claims"]:
            nid = str(claim.get("node"))
            running[nid] = running.get(nid, 0) + 1
            used[nid] = used.get(nid, 0) + int(claim.get("weight", 1))
        live = raw["live"]
        loads = await read_loads(node.etcd, node.keys, raw["revision"])  # D257
        ttls = await asyncio.gather(
            *(self._heartbeat(kv.lease) for kv in live.values()), return_exceptions=True
        )
        beats = dict(zip(live, ttls, strict=True))
        for nid, beat in beats.items():
            if isinstance(beat, str):
                self._seen[nid] = beat
        for gone in set(self._seen) - set(raw["records"]):  # forgotten nodes: bounded
            del self._seen[gone]
        led: dict[str, list[int]] = {}  # the scheduler shards each node leads (D303)
        for shard, leader in (await shards_status(node))["leaders"].items():
            if leader is not None:
                led.setdefault(leader, []).append(int(shard))
        out = []
        for nid, rec in raw["records"].items():
            view = topo.nodes[nid]
            state = raw["states"].get(nid)
            beat = beats.get(nid)
            out.append(
                {
                    "id": nid,
                    "up": view.up,
                    "state": admin_status(view.admin, running.get(nid, 0)),
                    "enabled": view.admin == "enabled",
                    "disconnect_requested": bool(state and state.disconnect),
                    "running": running.get(nid, 0),
                    "capacity": view.capacity,
                    "shards": sorted(led.get(nid, [])),
                    "used_weight": used.get(nid, 0),
                    "weight_budget": view.weight_budget,
                    "properties": dict(view.properties),
                    "run_as": sorted(view.run_as),  # users jobs may run as there (D142)
                    "version": rec.get("version"),
                    "owner": rec.get("owner", ""),
                    "address": rec.get("address"),
                    "machine_id": rec.get("machine_id") if view.up else None,
                    "pid": rec.get("pid"),
                    "started_at": rec.get("started_at"),
                    "registered_at": rec.get("registered_at"),
                    "last_heartbeat": beat if isinstance(beat, str) else self._last_seen(nid, rec),
                    "load": loads.get(nid) if view.up else None,
                    "state_reason": state.reason if state else "",
                }
            )
        return out

    def _last_seen(self, nid: str, rec: dict[str, Any]) -> str | None:
        """A down node's last heartbeat: when it stopped, or the last beat this node saw (a
        node that died holds no lease to ask, D180)."""
        times = [t for t in (rec.get("stopped_at"), self._seen.get(nid)) if isinstance(t, str)]
        return max(times, key=_instant) if times else None

    async def _heartbeat(self, lease: int) -> str | None:
        """When the node last refreshed its lease (granted TTL minus what is left)."""
        if not lease:
            return None
        remaining, granted = await self.node.etcd.time_to_live(lease)
        if remaining < 0:
            return None
        when: datetime = self.node.clock() - timedelta(seconds=max(0, granted - remaining))
        return when.isoformat()

    async def list_nodes(self, request: web.Request) -> web.Response:
        self.groups()
        return _json({"nodes": loads_for(request, await self.node_list())})

    async def get_node(self, request: web.Request) -> web.Response:
        self.groups()
        nid = _node_id(request)
        for doc in loads_for(request, await self.node_list()):
            if doc["id"] == nid:
                return _json(doc)
        raise NodeNotFound(f"node {nid!r} has never registered", field="node")

    async def forget_node(self, request: web.Request) -> web.Response:
        await self.groups().forget_node(_node_id(request))
        return web.Response(status=204)

    async def node_action(self, request: web.Request) -> web.Response:
        nid, action = _node_id(request), request.match_info["action"]
        if action not in NODE_ACTIONS:
            raise InvalidInput(
                f"unknown node action {action!r}; one of {', '.join(NODE_ACTIONS)}", field="action"
            )
        reason = request.query.get("reason", "")
        store = self.groups()
        if action == "shutdown":
            if await self.node.etcd.get(self.node.keys.node(nid)) is None:
                raise Conflict(f"node {nid!r} is down; nothing to shut down", field="node")
            await store.set_node_state(nid, disconnect=True, reason=reason)
        else:
            admin = {"enable": "enabled", "disable": "disabled", "drain": "draining"}[action]
            await store.set_node_state(nid, admin=admin, reason=reason)  # type: ignore[arg-type]
        for doc in await self.node_list():
            if doc["id"] == nid:
                return _json(doc, 202 if action == "shutdown" else 200)
        raise NodeNotFound(f"node {nid!r} has never registered", field="node")

    # -- groups --------------------------------------------------------------------------------

    async def list_groups(self, request: web.Request) -> web.Response:
        from nodes.api.http import paged

        page, more = paged(request, await self.groups().list_groups(), lambda g: g["name"])
        return _json({"groups": page, "next": more})

    async def get_group(self, request: web.Request) -> web.Response:
        return _json(await self.groups().get_group(_name(request, "group", "group")))

    async def put_group(self, request: web.Request) -> web.Response:
        from nodes.api.http import body_json

        name = _name(request, "group", "group")
        data = await body_json(request)
        if data.get("name", name) != name:
            raise InvalidInput(
                f"name {data['name']!r} in the body differs from {name!r} in the path",
                field="name",
            )
        data.pop("bindings", None)
        for key in ("created_at", "updated_at"):
            data.pop(key, None)
        spec = parse_model(GroupSpec, {**data, "name": name})
        doc, created = await self.groups().put_group(spec)
        return _json(doc, 201 if created else 200)

    async def delete_group(self, request: web.Request) -> web.Response:
        await self.groups().delete_group(_name(request, "group", "group"))
        return web.Response(status=204)

    async def put_binding(self, request: web.Request) -> web.Response:
        from nodes.api.http import body_json

        group = _name(request, "group", "group")
        name = _name(request, "binding", "binding")
        data = await body_json(request)
        if data.get("name", name) != name:
            raise InvalidInput(
                f"name {data['name']!r} in the body differs from {name!r} in the path",
                field="name",
            )
        for key in ("group", "created_at", "updated_at"):
            data.pop(key, None)
        spec = parse_model(BindingSpec, {**data, "name": name})
        doc, created = await self.groups().put_binding(group, spec)
        return _json(doc, 201 if created else 200)

    async def delete_binding(self, request: web.Request) -> web.Response:
        group = _name(request, "group", "group")
        await self.groups().delete_binding(group, _name(request, "binding", "binding"))
        return web.Response(status=204)

    async def grant(self, request: web.Request) -> web.Response:
        group = _name(request, "group", "group")
        project = request.match_info["project"]
        if not _PROJECT_OR_ALL.fullmatch(project):
            raise InvalidInput(f"invalid project name {project!r}", field="project")
        granted = request.method == "PUT"
        doc = await self.groups().set_grant(group, project, granted=granted)
        log.info("group grant changed", group=group, project=project, granted=granted)
        return _json(doc)

    async def project_targets(self, request: web.Request) -> web.Response:
        """What a project's jobs may target: its granted groups, and the nodes its runs reach."""
        project = _name(request, "project", "project")
        self.groups()
        topo, _ = await read_topology(self.node.etcd, self.node.keys)
        reserved, via = topo.reach(project)
        groups = sorted(g for g in topo.groups if topo.allows(g, project))
        nodes = [
            {"node": nid, "via": via.get(nid)}
            for nid in sorted(topo.nodes)
            if nid not in reserved or nid in via
        ]
        return _json({"project": project, "groups": groups, "nodes": nodes})

    async def explain(self, request: web.Request) -> web.Response:
        """Where runs of a target would go now: ``?group=g&selector=zone%3Deu1&run=<id>``
        (``&project=p``: only what that project was granted)."""
        from cluster.models import Target
        from nodes.api.http import int_query

        self.groups()
        target = parse_model(
            Target,
            {
                k: v
                for k, v in (
                    ("group", request.query.get("group") or None),
                    ("selector", request.query.get("selector", "")),
                )
                if v is not None
            },
        )
        project = request.query.get("project") or None
        if project is not None and not NAME_RE.fullmatch(project):
            raise InvalidInput(f"invalid project name {project!r}", field="project")
        topo, _ = await read_topology(self.node.etcd, self.node.keys)
        run = request.query.get("run") or None
        attempt = int_query(request, "attempt", 1, 1, 1000)
        draw = attempt_key(run, attempt) if run else None
        return _json(placement_doc(draw, for_target(target, topo, project)))


def add_routes(app: web.Application, node: ApiContext) -> None:
    api = PlacementApi(node)
    r = app.router
    r.add_get("/api/v1/nodes", api.list_nodes)
    r.add_get("/api/v1/nodes/{node}", api.get_node)
    r.add_delete("/api/v1/nodes/{node}", api.forget_node)
    r.add_post("/api/v1/nodes/{node}/{action}", api.node_action)
    r.add_get("/api/v1/groups", api.list_groups)
    r.add_get("/api/v1/groups/{group}", api.get_group)
    r.add_put("/api/v1/groups/{group}", api.put_group)
    r.add_delete("/api/v1/groups/{group}", api.delete_group)
    r.add_put("/api/v1/groups/{group}/bindings/{binding}", api.put_binding)
    r.add_delete("/api/v1/groups/{group}/bindings/{binding}", api.delete_binding)
    r.add_put("/api/v1/groups/{group}/projects/{project}", api.grant)
    r.add_delete("/api/v1/groups/{group}/projects/{project}", api.grant)
    r.add_get("/api/v1/placement", api.explain)
    r.add_get("/api/v1/projects/{project}/targets", api.project_targets)
