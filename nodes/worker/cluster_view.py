"""A node's live picture of the cluster for placement: live nodes, admin states, groups, bindings.

Each worker keeps it by reading the four prefixes and watching them from that revision (no
polling, no writes); the API reads the same prefixes once at one revision (``read_topology``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import structlog

from cluster.etcd import KV, Etcd, WatchBatch
from cluster.groups import NodeState, granted_projects
from cluster.keys import Keys
from cluster.placement import Binding, NodeView, Placement, Topology, place
from cluster.watch import by_key, follow

log = structlog.get_logger(__name__)


def node_view(record: dict[str, Any], state: NodeState | None, up: bool) -> NodeView:
    budget = record.get("weight_budget")
    return NodeView(
        id=str(record["id"]),
        properties=dict(record.get("properties") or {}),
        capacity=int(record.get("capacity") or 16),
        weight_budget=int(budget) if budget else None,
        admin="stopping" if record.get("stopping") else (state.admin if state else "enabled"),
        up=up,
        run_as=frozenset(str(u) for u in record.get("run_as") or ()),
    )


def _state(value: bytes) -> NodeState | None:
    try:
        return NodeState.model_validate_json(value)
    except ValueError:
        log.error("unreadable node state; treating the node as enabled")
        return None


def _grants(value: bytes) -> frozenset[str]:
    try:
        doc = json.loads(value)
        return granted_projects(doc) if isinstance(doc, dict) else frozenset()
    except ValueError:
        log.error("unreadable group record; granted to no project")
        return frozenset()


def _binding(value: bytes) -> Binding | None:
    try:
        doc = json.loads(value)
        return Binding(str(doc["group"]), str(doc["name"]), str(doc["node"]), int(doc["weight"]))
    except (ValueError, KeyError, TypeError):
        log.error("unreadable binding; ignored")
        return None


class ClusterView:
    """Followed by a worker; ``version`` changes whenever anything placement depends on does."""

    def __init__(self, etcd: Etcd, keys: Keys, node_id: str) -> None:
        self.etcd = etcd
        self.keys = keys
        self.node_id = node_id
        self.records: dict[str, dict[str, Any]] = {}
        self.states: dict[str, tuple[NodeState | None, int]] = {}  # node -> (state, mod rev)
        self.groups: set[str] = set()
        self.grants: dict[str, tuple[frozenset[str], int]] = {}  # group -> (projects, mod rev)
        self.binds: dict[tuple[str, str], Binding] = {}
        self.project_users: dict[str, frozenset[str]] = {}  # project -> run_as_users (D142)
        self.project_revs: dict[str, int] = {}  # project -> mod revision of its record
        # every binding written at or before this revision is in ``binds`` (claims compare it)
        self.bindings_revision = 0
        self.loaded: set[str] = set()
        self.version = 0
        self.on_change: Callable[[], None] = lambda: None
        self.on_own_state: Callable[[NodeState | None, int], None] = lambda s, r: None
        self._topology: Topology | None = None
        self._placements: dict[tuple[str | None, str | None, str, str | None], Placement] = {}

    @property
    def ready(self) -> bool:
        return len(self.loaded) == 5

    def own_state(self) -> tuple[NodeState | None, int]:
        return self.states.get(self.node_id, (None, 0))

    def topology(self) -> Topology:
        if self._topology is None:
            nodes = {
                nid: node_view(rec, self.states.get(nid, (None, 0))[0], True)
                for nid, rec in self.records.items()
            }
            bindings: dict[str, list[Binding]] = {}
            for b in self.binds.values():
                bindings.setdefault(b.group, []).append(b)
            self._topology = Topology(
                nodes,
                frozenset(self.groups),
                {g: tuple(bs) for g, bs in bindings.items()},
                {g: projects for g, (projects, _) in self.grants.items()},
            )
        return self._topology

    def placement(
        self,
        group: str | None,
        selector: str,
        project: str | None = None,
        user: str | None = None,
    ) -> Placement:
        """Cached per view version: the worker asks for every queued run on each dispatch."""
        key = (project, group, selector, user)
        got = self._placements.get(key)
        if got is None:
            got = place(group, selector, self.topology(), project, user)
            self._placements[key] = got
        return got

    def project_revision(self, project: str) -> int:
        """The mod revision of a project's record as this view knows it (0: absent)."""
        return self.project_revs.get(project, 0)

    def group_revision(self, group: str) -> int:
        """The mod revision of a group's record as this view knows it (0: unknown)."""
        return self.grants.get(group, (frozenset(), 0))[1]

    def _changed(self) -> None:
        self.version += 1
        self._topology = None
        self._placements.clear()
        self.on_change()

    # -- following -----------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow(self.keys.nodes(), self._on_node))
            tg.create_task(self._follow(self.keys.node_states(), self._on_state))
            tg.create_task(self._follow(self.keys.groups(), self._on_group))
            tg.create_task(self._follow(self.keys.bindings(), self._on_binding))
            tg.create_task(self._follow(self.keys.projects(), self._on_project))

    async def _follow(self, prefix: str, handle: Callable[[str, KV | None], None]) -> None:
        def on_read(revision: int) -> None:
            if prefix == self.keys.bindings():
                self.bindings_revision = revision
            self.loaded.add(prefix)
            self._changed()

        def on_batch(batch: WatchBatch, _position: int) -> None:
            if batch.events:
                if prefix == self.keys.bindings():
                    top = max(ev.kv.mod_revision for ev in batch.events)
                    self.bindings_revision = max(self.bindings_revision, top)
                self._changed()

        await follow(
            self.etcd,
            prefix,
            None,
            by_key(handle),
            what="view watch",
            reread=True,
            reset=lambda: self._reset(prefix),
            on_read=on_read,
            on_batch=on_batch,
        )

    def _reset(self, prefix: str) -> None:
        if prefix == self.keys.nodes():
            self.records.clear()
        elif prefix == self.keys.node_states():
            self.states.clear()
        elif prefix == self.keys.groups():
            self.groups.clear()
            self.grants.clear()
        elif prefix == self.keys.projects():
            self.project_users.clear()
            self.project_revs.clear()
        else:
            self.binds.clear()

    def _on_node(self, key: str, kv: KV | None) -> None:
        node = key.rsplit("/", 1)[-1]
        if kv is None:
            self.records.pop(node, None)
            return
        try:
            self.records[node] = json.loads(kv.value)
        except ValueError:
            log.error("unreadable node record; ignored", node=node)

    def _on_state(self, key: str, kv: KV | None) -> None:
        node = key.rsplit("/", 1)[-1]
        if kv is None:
            self.states.pop(node, None)
            state, rev = None, 0
        else:
            state, rev = _state(kv.value), kv.mod_revision
            self.states[node] = (state, rev)
        if node == self.node_id:
            self.on_own_state(state, rev)

    def _on_group(self, key: str, kv: KV | None) -> None:
        name = key.rsplit("/", 1)[-1]
        if kv is None:
            self.groups.discard(name)
            self.grants.pop(name, None)
        else:
            self.groups.add(name)
            self.grants[name] = (_grants(kv.value), kv.mod_revision)

    def _on_project(self, key: str, kv: KV | None) -> None:
        name = key.rsplit("/", 1)[-1]
        users: frozenset[str] = frozenset()
        if kv is not None:
            try:
                users = frozenset(str(u) for u in json.loads(kv.value).get("run_as_users") or ())
            except (ValueError, AttributeError):
                log.error("unreadable project record; it allows no run_as user", project=name)
        if users:
            self.project_users[name] = users
        else:
            self.project_users.pop(name, None)
        if kv is None:
            self.project_revs.pop(name, None)
        else:
            self.project_revs[name] = kv.mod_revision

    def _on_binding(self, key: str, kv: KV | None) -> None:
        group, name = self.keys.tail(key, self.keys.bindings())[:2]
        if kv is None:
            self.binds.pop((group, name), None)
            return
        b = _binding(kv.value)
        if b is not None:
            self.binds[(group, name)] = b


async def read_topology(etcd: Etcd, keys: Keys) -> tuple[Topology, dict[str, Any]]:
    """The topology at one revision, plus the raw reads the nodes listing needs."""
    infos = await etcd.range_all(keys.node_infos())
    rev = infos.revision
    live = await etcd.range_all(keys.nodes(), revision=rev)
    states = await etcd.range_all(keys.node_states(), revision=rev)
    groups = await etcd.range_all(keys.groups(), revision=rev)
    binds = await etcd.range_all(keys.bindings(), revision=rev)
    claims = await etcd.range_all(keys.claims(), revision=rev)
    state_of = {kv.key.rsplit("/", 1)[-1]: _state(kv.value) for kv in states.kvs}
    live_of = {kv.key.rsplit("/", 1)[-1]: kv for kv in live.kvs}
    nodes: dict[str, NodeView] = {}
    records: dict[str, dict[str, Any]] = {}
    for kv in infos.kvs:
        rec = json.loads(kv.value)
        nid = str(rec["id"])
        if nid in live_of:
            rec.update(json.loads(live_of[nid].value))
        records[nid] = rec
        nodes[nid] = node_view(rec, state_of.get(nid), nid in live_of)
    bindings: dict[str, list[Binding]] = {}
    for kv in binds.kvs:
        b = _binding(kv.value)
        if b is not None:
            bindings.setdefault(b.group, []).append(b)
    topo = Topology(
        nodes,
        frozenset(kv.key.rsplit("/", 1)[-1] for kv in groups.kvs),
        {g: tuple(bs) for g, bs in bindings.items()},
        {kv.key.rsplit("/", 1)[-1]: _grants(kv.value) for kv in groups.kvs},
    )
    raw = {
        "records": records,
        "states": state_of,
        "live": live_of,
        "claims": [json.loads(kv.value) for kv in claims.kvs],
        "revision": rev,
    }
    return topo, raw
