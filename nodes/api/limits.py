"""Cluster settings a cluster admin writes, and the gate manual runs pass (D170, D173;
the gate itself: ``nodes/api/rungate.py``):

- ``GET/PUT /api/v1/settings/webhooks``: the SSRF allow-list (``cluster/netguard.py``);
- ``GET/PUT /api/v1/settings/run-limits``: cluster defaults of the run caps (``cluster/limits.py``);
- ``GET /api/v1/projects/{p}/run-limits`` (viewer: the effective limits and the overrides),
  ``PUT/DELETE`` (cluster admin only: a project's admin must not lift their own cap).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from cluster.limits import RunLimits
from cluster.models import parse_model
from cluster.netguard import WebhookSettings
from nodes.api.http import body_json, ok, project_of, require_connected
from nodes.api.openapi import documented
from nodes.api.rungate import RunGate

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

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
