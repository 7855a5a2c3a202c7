"""Executor groups and their bindings (group -> node, with a weight), and node admin states.

A job targets a group; the group's bindings say which nodes carry it and in what proportion.
Re-pointing a binding at another node moves every job of the group from the next run on, without
editing a job. Values are JSON under ``groups/<group>``, ``bindings/<group>/<binding>`` and
``node-state/<node>``.

A group is also the unit of *grants* (D155): its ``projects`` list names the projects whose jobs
and workflow tasks may target it (``*``: every project). A node bound to a group is reserved for
the projects granted one of its groups; a node bound to no group is shared by every project.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from cluster.errors import Conflict, Forbidden, NotFound
from cluster.etcd import Compare, Etcd, Op
from cluster.fields import NAME_PATTERN, Strict
from cluster.keys import Keys
from cluster.models import parse_model
from cluster.placement import MAX_WEIGHT

NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"
AdminState = Literal["enabled", "disabled", "draining"]


def _missing(group: str) -> str:
    """A grant or binding names a group that does not exist: say how to make it (D509)."""
    return (
        f"group {group!r} not found: create it first (`cronmesh group apply -f FILE` with"
        f" `name: {group}`, or PUT /api/v1/groups/{group})"
    )


class GroupNotFound(NotFound):
    code = "group_not_found"


class BindingNotFound(NotFound):
    code = "binding_not_found"


class NodeNotFound(NotFound):
    code = "node_not_found"


class GroupNotGranted(Forbidden):
    code = "group_not_granted"


class GrantNotFound(NotFound):
    code = "grant_not_found"


ALL_PROJECTS = "*"
PROJECT_OR_ALL = r"^(\*|[a-z0-9][a-z0-9\-_.]{0,62})$"
MAX_GRANTS = 1000  # projects named on one group


def granted_projects(doc: dict[str, Any]) -> frozenset[str]:
    """The projects a group record grants. A record written before grants existed has no
    ``projects`` field and reads as open to every project (what it was), D155."""
    if "projects" not in doc:
        return frozenset({ALL_PROJECTS})
    return frozenset(str(p) for p in doc.get("projects") or ())


def is_granted(projects: frozenset[str] | set[str], project: str) -> bool:
    return ALL_PROJECTS in projects or project in projects


def not_granted(group: str, project: str, field: str) -> GroupNotGranted:
    return GroupNotGranted(
        f"group {group!r} is not granted to project {project!r} (a cluster admin grants it: "
        f"cronmesh group grant {group} --project {project})",
        field=field,
    )


async def target_guards(
    etcd: Etcd, keys: Keys, project: str, targets: list[tuple[str, str]]
) -> list[Any]:
    """Check that ``project`` was granted every ``(field, group)`` a job or workflow targets;
    answers compares on the group records for the write's transaction (a revocation racing
    the write makes it retry and fail), or raises ``GroupNotGranted`` naming the field."""
    guards: list[Any] = []
    seen: set[str] = set()
    for field, group in targets:
        if group in seen:
            continue
        seen.add(group)
        kv = await etcd.get(keys.group(group))
        if kv is None or not is_granted(granted_projects(json.loads(kv.value)), project):
            raise not_granted(group, project, field)
        guards.append(Compare.modified(kv.key, kv.mod_revision))
    return guards


class GroupSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=4096)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=64)
    # None: keep what the record has (a new group: granted to no project)
    projects: list[Annotated[str, Field(pattern=PROJECT_OR_ALL)]] | None = Field(
        default=None, max_length=MAX_GRANTS
    )


class BindingSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    node: str = Field(pattern=NODE_ID_PATTERN)
    weight: int = Field(default=1, ge=1, le=MAX_WEIGHT)


class NodeState(Strict):
    """An operator's wishes for one node, watched by that node."""

    admin: AdminState = "enabled"
    disconnect: bool = False  # the node shuts down gracefully, then clears this
    changed_at: datetime | None = None
    reason: str = Field(default="", max_length=1024)


class GroupStore:
    def __init__(self, etcd: Etcd, keys: Keys, clock: Callable[[], datetime]) -> None:
        self.etcd = etcd
        self.keys = keys
        self.clock = clock

    # -- groups --------------------------------------------------------------------------------

    async def list_groups(self) -> list[dict[str, Any]]:
        groups = await self.etcd.range_all(self.keys.groups())
        binds = await self.etcd.range_all(self.keys.bindings(), revision=groups.revision)
        by_group: dict[str, list[dict[str, Any]]] = {}
        for kv in binds.kvs:
            group = self.keys.tail(kv.key, self.keys.bindings())[0]
            by_group.setdefault(group, []).append(json.loads(kv.value))
        out = []
        for kv in groups.kvs:
            doc = json.loads(kv.value)
            doc["projects"] = sorted(granted_projects(doc))
            doc["bindings"] = by_group.get(doc["name"], [])
            out.append(doc)
        return out

    async def get_group(self, name: str) -> dict[str, Any]:
        res = await self.etcd.txn(
            [], [Op.get(self.keys.group(name)), Op.get(self.keys.bindings(name), prefix=True)]
        )
        found = res.range_kvs(0)
        if not found:
            raise GroupNotFound(f"group {name!r} not found", field="group")
        doc: dict[str, Any] = json.loads(found[0].value)
        doc["projects"] = sorted(granted_projects(doc))
        doc["bindings"] = [json.loads(kv.value) for kv in res.range_kvs(1)]
        return doc

    async def put_group(self, spec: GroupSpec) -> tuple[dict[str, Any], bool]:
        key = self.keys.group(spec.name)
        for _ in range(5):
            kv = await self.etcd.get(key)
            now = self.clock().isoformat()
            old = json.loads(kv.value) if kv else {}
            doc = {
                **spec.model_dump(mode="json", exclude={"projects"}),
                "created_at": old.get("created_at", now),
                "updated_at": now,
            }
            if spec.projects is not None:
                doc["projects"] = sorted(set(spec.projects))
            elif kv is None:
                doc["projects"] = []  # a new group is granted to no project until an admin says
            elif "projects" in old:
                doc["projects"] = old["projects"]
            res = await self.etcd.txn(
                [Compare.modified(key, kv.mod_revision if kv else 0)],
                [Op.put(key, json.dumps(doc, separators=(",", ":")))],
            )
            if res.succeeded:
                doc["projects"] = sorted(granted_projects(doc))
                return doc, kv is None
        raise Conflict(f"group {spec.name!r} is being changed concurrently; retry", field="name")

    # -- grants (D155) -------------------------------------------------------------------------

    async def set_grant(self, group: str, project: str, *, granted: bool) -> dict[str, Any]:
        """Grant ``group`` to ``project`` (``*``: every project) or revoke it; answers the group.
        A compare-and-swap on the group record, which workers compare again when they claim."""
        key = self.keys.group(group)
        for _ in range(5):
            kv = await self.etcd.get(key)
            if kv is None:
                raise GroupNotFound(_missing(group), field="group")
            doc: dict[str, Any] = json.loads(kv.value)
            projects = set(granted_projects(doc))
            if granted:
                if project not in projects and len(projects) >= MAX_GRANTS:
                    raise Conflict(
                        f"group {group!r} is granted to {MAX_GRANTS} projects already; "
                        f"grant it to '*' instead",
                        field="project",
                    )
                projects.add(project)
            else:
                if project not in projects:
                    raise GrantNotFound(
                        f"group {group!r} is not granted to {project!r}", field="project"
                    )
                projects.discard(project)
            doc["projects"] = sorted(projects)
            doc["updated_at"] = self.clock().isoformat()
            res = await self.etcd.txn(
                [Compare.modified(key, kv.mod_revision)],
                [Op.put(key, json.dumps(doc, separators=(",", ":")))],
            )
            if res.succeeded:
                return doc
        raise Conflict(f"group {group!r} is being changed concurrently; retry", field="group")

    async def delete_group(self, name: str) -> None:
        key = self.keys.group(name)
        res = await self.etcd.txn(
            [Compare.exists(key)],
            [Op.delete(key), Op.delete(self.keys.bindings(name), prefix=True)],
        )
        if not res.succeeded:
            raise GroupNotFound(f"group {name!r} not found", field="group")

    async def forget_project(self, project: str) -> list[str]:
        """Revoke ``project`` from every group (the project is deleted: a new project of the same
        name must not inherit its machines). Answers the groups it was revoked from."""
        res = await self.etcd.range(self.keys.groups())
        revoked = []
        for kv in res.kvs:
            doc = json.loads(kv.value)
            if project in doc.get("projects") or ():
                group = str(doc["name"])
                with contextlib.suppress(GrantNotFound, GroupNotFound):
                    await self.set_grant(group, project, granted=False)
                    revoked.append(group)
        return revoked

    # -- bindings ------------------------------------------------------------------------------

    async def put_binding(self, group: str, spec: BindingSpec) -> tuple[dict[str, Any], bool]:
        """Create or re-point a binding; the group must exist (checked in the same write)."""
        key = self.keys.binding(group, spec.name)
        for _ in range(5):
            kv = await self.etcd.get(key)
            now = self.clock().isoformat()
            old = json.loads(kv.value) if kv else {}
            doc = {
                **spec.model_dump(mode="json"),
                "group": group,
                "created_at": old.get("created_at", now),
                "updated_at": now,
            }
            res = await self.etcd.txn(
                [
                    Compare.exists(self.keys.group(group)),
                    Compare.modified(key, kv.mod_revision if kv else 0),
                ],
                [Op.put(key, json.dumps(doc, separators=(",", ":")))],
                [Op.get(self.keys.group(group), keys_only=True)],
            )
            if res.succeeded:
                return doc, kv is None
            if not res.range_kvs(0):
                raise GroupNotFound(_missing(group), field="group")
        raise Conflict(f"binding {spec.name!r} is being changed concurrently; retry", field="name")

    async def delete_binding(self, group: str, name: str) -> None:
        key = self.keys.binding(group, name)
        res = await self.etcd.txn([Compare.exists(key)], [Op.delete(key)])
        if not res.succeeded:
            raise BindingNotFound(f"binding {name!r} not found in group {group!r}", field="binding")

    # -- node admin state ----------------------------------------------------------------------

    async def forget_node(self, node: str) -> None:
        """Remove a node that is down from the listing (its info and admin state)."""
        info = self.keys.node_info(node)
        res = await self.etcd.txn(
            [Compare.absent(self.keys.node(node)), Compare.exists(info)],
            [Op.delete(info), Op.delete(self.keys.node_state(node))],
            [Op.get(info, keys_only=True)],
        )
        if res.succeeded:
            return
        if not res.range_kvs(0):
            raise NodeNotFound(f"node {node!r} has never registered", field="node")
        raise Conflict(f"node {node!r} is up; stop it before forgetting it", field="node")

    async def get_node_state(self, node: str) -> tuple[NodeState, int]:
        kv = await self.etcd.get(self.keys.node_state(node))
        if kv is None:
            return NodeState(), 0
        return NodeState.model_validate_json(kv.value), kv.mod_revision

    async def set_node_state(
        self,
        node: str,
        *,
        admin: AdminState | None = None,
        disconnect: bool | None = None,
        reason: str | None = None,
    ) -> NodeState:
        """Change a node's wishes (compare-and-swap on the key); the node must have registered."""
        if await self.etcd.get(self.keys.node_info(node)) is None:
            raise NodeNotFound(f"node {node!r} has never registered", field="node")
        key = self.keys.node_state(node)
        for _ in range(5):
            state, rev = await self.get_node_state(node)
            update: dict[str, Any] = {"changed_at": self.clock()}
            if admin is not None:
                update["admin"] = admin
            if disconnect is not None:
                update["disconnect"] = disconnect
            if reason is not None:
                update["reason"] = reason
            new = parse_model(NodeState, {**state.model_dump(), **update})
            res = await self.etcd.txn(
                [Compare.modified(key, rev)], [Op.put(key, new.model_dump_json())]
            )
            if res.succeeded:
                return new
        raise Conflict(f"node {node!r} state is being changed concurrently; retry", field="node")
