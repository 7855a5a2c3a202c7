"""Cluster settings a cluster admin writes, and the gate manual runs pass (D170, D173):

- ``GET/PUT /api/v1/settings/webhooks``: the SSRF allow-list (``cluster/netguard.py``);
- ``GET/PUT /api/v1/settings/run-limits``: cluster defaults of the run caps (``cluster/limits.py``);
- ``GET /api/v1/projects/{p}/run-limits`` (viewer: the effective limits and the overrides),
  ``PUT/DELETE`` (cluster admin only: a project's admin must not lift their own cap).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from cluster.errors import Conflict, CronmeshError
from cluster.etcd import KV, Compare, Op
from cluster.limits import (
    HOLD_SECONDS,
    Buckets,
    Counted,
    RunLimits,
    check_pending,
    effective,
    holds_value,
    live_holds,
)
from cluster.models import parse_model
from cluster.netguard import WebhookSettings
from nodes.api.http import body_json, ok, project_of, require_connected
from nodes.api.openapi import documented

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

log = structlog.get_logger(__name__)
ADMIT_TRIES = 20  # an admission on another node of the same project since our count: again


class RunGate:
    """What every manual run passes before anything is written: the project's rate (per node)
    and its cap on unfinished runs (counted in etcd). An admission holds its runs against the cap
    in ``run-admissions/<project>`` until they are written (``admitted``), so admissions that
    raced one count cannot all pass it (D512): one ``run_burst`` per node could before."""

    def __init__(
        self,
        node: ApiContext,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.clock = clock
        self.wall = wall
        self.buckets = Buckets()
        # admissions of one project on this node take turns: they would only conflict in etcd
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}

    async def limits(
        self, project: str
    ) -> tuple[RunLimits, RunLimits | None, RunLimits | None, int]:
        """(effective, cluster defaults, project overrides, unfinished runs): one round trip."""
        limits, cluster, own, unfinished, _, _ = await self._read(project)
        return limits, cluster, own, unfinished

    async def _read(
        self, project: str, also: Counted | None = None
    ) -> tuple[RunLimits, RunLimits | None, RunLimits | None, int, KV | None, int]:
        keys = self.node.keys
        res = await self.node.etcd.txn(
            [],
            [
                Op.get(keys.run_limits()),
                Op.get(keys.project_run_limits(project)),
                Op.count(keys.actives(project)),
                Op.get(keys.run_admissions(project)),
                *([Op.count(also.prefix)] if also else []),
            ],
        )
        cluster_kvs, project_kvs = res.range_kvs(0), res.range_kvs(1)
        cluster = RunLimits.model_validate_json(cluster_kvs[0].value) if cluster_kvs else None
        own = RunLimits.model_validate_json(project_kvs[0].value) if project_kvs else None
        unfinished = int(res.responses[2].response_range.count)
        holds = res.range_kvs(3)
        counted = int(res.responses[4].response_range.count) if also else 0
        return (
            effective(cluster, own),
            cluster,
            own,
            unfinished,
            holds[0] if holds else None,
            counted,
        )

    @contextlib.asynccontextmanager
    async def admitted(
        self, project: str, runs: int, what: str = "runs", also: Counted | None = None
    ) -> AsyncIterator[None]:
        """Raise 429 (rate) or 403 ``quota_exceeded`` (cap) before ``runs`` new runs are made;
        else hold them against the cap while the body writes them (and a place in ``also``,
        which the body creates one key under: D513)."""
        hold = await self._admit(project, runs, what, also)
        try:
            yield
        finally:
            await self._release(project, hold)

    async def _admit(self, project: str, runs: int, what: str, also: Counted | None) -> str:
        key = self.node.keys.run_admissions(project)
        async with self._turn(project):
            for attempt in range(ADMIT_TRIES):
                limits, _, _, unfinished, kv, counted = await self._read(project, also)
                holds = live_holds(kv.value if kv else None, self.wall())
                assert limits.max_pending_runs is not None
                held = sum(h[1] for h in holds)
                check_pending(project, unfinished, runs, limits.max_pending_runs, held)
                if also is not None:
                    counted += sum(h[3] == also.prefix for h in holds)
                    if counted >= also.cap:
                        raise also.refusal(counted)
                if not attempt:
                    self.buckets.admit(project, runs, limits, self.clock(), what)
                hold = secrets.token_hex(8)
                tag = also.prefix if also else ""
                holds.append((hold, runs, self.wall() + HOLD_SECONDS, tag))
                # compared: an admission on another node since our read makes us count again
                res = await self.node.etcd.txn(
                    [Compare.modified(key, kv.mod_revision if kv else 0)],
                    [Op.put(key, holds_value(holds))],
                )
                if res.succeeded:
                    return hold
        raise Conflict(
            f"manual runs of project {project!r} are being admitted concurrently; retry",
            field="max_pending_runs",
        )

    async def _release(self, project: str, hold: str) -> None:
        """Drop the hold (its runs are written, or were not): best effort, it expires anyway."""
        key = self.node.keys.run_admissions(project)
        etcd = self.node.etcd
        try:
            async with self._turn(project):
                for _ in range(ADMIT_TRIES):
                    kv = await etcd.get(key)
                    if kv is None:
                        return
                    holds = [h for h in live_holds(kv.value, self.wall()) if h[0] != hold]
                    op = Op.put(key, holds_value(holds)) if holds else Op.delete(key)
                    if (await etcd.txn([Compare.modified(key, kv.mod_revision)], [op])).succeeded:
                        return
        except CronmeshError as exc:  # the hold expires after HOLD_SECONDS
            log.info("a run admission was not released", project=project, error=str(exc))

    @contextlib.asynccontextmanager
    async def _turn(self, project: str) -> AsyncIterator[None]:
        lock, users = self._turns.get(project) or (asyncio.Lock(), 0)
        self._turns[project] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[project]
            if users == 1:
                del self._turns[project]
            else:
                self._turns[project] = (lock, users - 1)


GATE: web.AppKey[RunGate] = web.AppKey("run_gate")


def gate(request: web.Request) -> RunGate:
    return request.app[GATE]


class LimitsApi:
    def __init__(self, node: ApiContext, gate: RunGate) -> None:
        self.node = node
        self.gate = gate

    @documented(answer=WebhookSettings)
    async def get_webhooks(self, request: web.Request) -> web.Response:
        """Where webhooks may go besides public addresses (cluster admin)"""
        require_connected(self.node)
        kv = await self.node.etcd.get(self.node.keys.webhook_settings())
        doc = WebhookSettings.model_validate_json(kv.value) if kv else WebhookSettings()
        return ok(doc.model_dump(mode="json"))

    @documented(body=WebhookSettings, answer=WebhookSettings)
    async def put_webhooks(self, request: web.Request) -> web.Response:
        """Replace the webhook allow-list (CIDRs, addresses, host names; optional :port)"""
        doc = parse_model(WebhookSettings, await body_json(request))
        require_connected(self.node)
        await self.node.etcd.put(self.node.keys.webhook_settings(), doc.model_dump_json())
        return ok(doc.model_dump(mode="json"))

    @documented(answer=RunLimits)
    async def get_cluster_limits(self, request: web.Request) -> web.Response:
        """Cluster defaults of the caps on manual runs (unset fields: built-in defaults)"""
        require_connected(self.node)
        _, cluster, _, _ = await self.gate.limits("-")
        return ok((cluster or RunLimits()).model_dump(mode="json"))

    @documented(body=RunLimits, answer=RunLimits)
    async def put_cluster_limits(self, request: web.Request) -> web.Response:
        """Replace the cluster defaults of the caps on manual runs"""
        doc = parse_model(RunLimits, await body_json(request))
        require_connected(self.node)
        await self.node.etcd.put(self.node.keys.run_limits(), doc.model_dump_json())
        return ok(doc.model_dump(mode="json"))

    @staticmethod
    def limits_doc(limits: RunLimits, own: RunLimits | None) -> dict[str, Any]:
        return {
            "effective": limits.model_dump(mode="json"),
            "overrides": (own or RunLimits()).model_dump(mode="json"),
        }

    @documented()
    async def get_project_limits(self, request: web.Request) -> web.Response:
        """The project's effective caps on manual runs, and its overrides"""
        project = project_of(request)
        require_connected(self.node)
        limits, _, own, _ = await self.gate.limits(project)
        return ok(self.limits_doc(limits, own))

    @documented(body=RunLimits)
    async def put_project_limits(self, request: web.Request) -> web.Response:
        """Override caps of one project (cluster admin)"""
        project = project_of(request)
        doc = parse_model(RunLimits, await body_json(request))
        require_connected(self.node)
        await self.node.etcd.put(self.node.keys.project_run_limits(project), doc.model_dump_json())
        limits, _, own, _ = await self.gate.limits(project)
        return ok(self.limits_doc(limits, own))

    @documented(status="204")
    async def delete_project_limits(self, request: web.Request) -> web.Response:
        """Remove a project's overrides (the cluster defaults apply again)"""
        project = project_of(request)
        require_connected(self.node)
        await self.node.etcd.delete(self.node.keys.project_run_limits(project))
        return web.Response(status=204)


def add_routes(app: web.Application, node: ApiContext) -> None:
    app[GATE] = RunGate(node)
    api = LimitsApi(node, app[GATE])
    r = app.router
    r.add_get("/api/v1/settings/webhooks", api.get_webhooks)
    r.add_put("/api/v1/settings/webhooks", api.put_webhooks)
    r.add_get("/api/v1/settings/run-limits", api.get_cluster_limits)
    r.add_put("/api/v1/settings/run-limits", api.put_cluster_limits)
    path = "/api/v1/projects/{project}/run-limits"
    r.add_get(path, api.get_project_limits)
    r.add_put(path, api.put_project_limits)
    r.add_delete(path, api.delete_project_limits)
