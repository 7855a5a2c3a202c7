"""HTTP routes of workflows and their executions (docs/workflows.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from cluster import params
from cluster.errors import InvalidInput
from cluster.ids import is_id
from cluster.models import parse_model
from cluster.workflow_store import WorkflowStore
from cluster.workflows import (
    READ_ONLY_WORKFLOW_FIELDS,
    Execution,
    ExecutionRequest,
    ReportRequest,
    RerunRequest,
    Workflow,
    WorkflowSpec,
    parse_workflow,
)
from nodes.api import limits as api_limits
from nodes.api.cron import with_dst_warnings
from nodes.api.http import (
    NAME_RE,
    body_json,
    dump,
    int_query,
    named_body,
    ok,
    page_query,
    project_of,
    require_store,
)
from nodes.api.openapi import LIMIT, STR, documented
from nodes.executor.runas import check_run_as

if TYPE_CHECKING:
    from nodes.api.context import ApiContext


class WorkflowApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node

    def wf(self) -> WorkflowStore:
        return WorkflowStore(require_store(self.node))

    @staticmethod
    def _spec(data: dict[str, Any], name: str | None) -> WorkflowSpec:
        return parse_workflow(named_body(data, name, READ_ONLY_WORKFLOW_FIELDS))

    async def _check_run_as(self, project: str, spec: WorkflowSpec) -> None:
        node = self.node
        for i, task in enumerate(spec.tasks):
            await check_run_as(
                node.etcd, node.keys, project, task.run_as, field=f"tasks.{i}.run_as"
            )

    @documented(query={"after": STR, "limit": LIMIT})
    async def list_workflows(self, request: web.Request) -> web.Response:
        project = project_of(request)
        after, limit = page_query(request)
        wfs, more = await self.wf().list_workflows(project, after=after, limit=limit)
        return ok({"workflows": [dump(w) for w in wfs], "next": more})

    @documented(body=WorkflowSpec, answer=Workflow, status="201")
    async def create(self, request: web.Request) -> web.Response:
        project = project_of(request)
        spec = self._spec(await body_json(request), None)
        await self._check_run_as(project, spec)
        hold = await require_store(self.node).creation_hold(project, "workflow", spec.name)
        async with api_limits.gate(request).admitted(project, 0, "workflows", hold):
            wf, _ = await self.wf().put_workflow(project, spec, create_only=True)
        return ok(self._saved(wf), 201)

    @documented(body=WorkflowSpec, answer=Workflow, also=("201",))
    async def put(self, request: web.Request) -> web.Response:
        project = project_of(request)
        spec = self._spec(await body_json(request), request.match_info["workflow"])
        await self._check_run_as(project, spec)
        hold = await require_store(self.node).creation_hold(project, "workflow", spec.name)
        async with api_limits.gate(request).admitted(project, 0, "workflows", hold):
            wf, created = await self.wf().put_workflow(project, spec)
        return ok(self._saved(wf), 201 if created else 200)

    def _saved(self, wf: Workflow) -> dict[str, Any]:
        hash_key = f"wf/{wf.project}/{wf.name}"
        return with_dst_warnings(dump(wf), wf.schedules, hash_key, self.node.clock())

    @documented(answer=Workflow)
    async def get(self, request: web.Request) -> web.Response:
        wf, _ = await self.wf().get_workflow_kv(project_of(request), request.match_info["workflow"])
        return ok(dump(wf))

    @documented(status="204")
    async def delete(self, request: web.Request) -> web.Response:
        await self.wf().delete_workflow(project_of(request), request.match_info["workflow"])
        return web.Response(status=204)

    @documented(body=ExecutionRequest, body_required=False, answer=Execution, status="201")
    async def trigger(self, request: web.Request) -> web.Response:
        project = project_of(request)
        req = parse_model(ExecutionRequest, await body_json(request, optional=True))
        name = request.match_info["workflow"]
        wf, _ = await self.wf().get_workflow_kv(project, name)
        declared = params.declared(
            wf.parameters, [s.parameters for s in wf.schedules] + [t.parameters for t in wf.tasks]
        )
        warnings = params.check_given(
            f"workflow {name}", declared, req.parameters
        )  # 400 if declared (D254)
        async with api_limits.gate(request).admitted(project, 1, "workflow executions"):  # D173
            ex = await self.wf().trigger(project, name, req.parameters)
        return ok({**dump(ex), **({"warnings": warnings} if warnings else {})}, 201)

    @documented(query={"limit": LIMIT, "workflow": STR, "before": STR})
    async def list_executions(self, request: web.Request) -> web.Response:
        project = project_of(request)
        limit = int_query(request, "limit", 50, 1, 1000)
        workflow = request.match_info.get("workflow") or request.query.get("workflow")
        if workflow is not None and not NAME_RE.fullmatch(workflow):
            raise InvalidInput(f"invalid workflow name {workflow!r}", field="workflow")
        before = request.query.get("before") or None
        if before is not None and not is_id(before):
            raise InvalidInput("before must be an execution id", field="before")
        execs, nxt = await self.wf().list_executions(project, workflow, limit, before)
        return ok(
            {
                "next": nxt,
                "executions": [
                    {
                        "id": e.id,
                        "workflow": e.workflow,
                        "status": e.status,
                        "source": e.source,
                        "created_at": e.created_at.isoformat(),
                        "finished_at": e.finished_at.isoformat() if e.finished_at else None,
                        "tasks": {n: t.status for n, t in e.tasks.items()},
                    }
                    for e in execs
                ],
            }
        )

    @documented()
    async def get_execution(self, request: web.Request) -> web.Response:
        project = project_of(request)
        return ok(await self.wf().view(project, request.match_info["execution"]))

    @documented(body=RerunRequest, body_required=False, answer=Execution)
    async def rerun(self, request: web.Request) -> web.Response:
        project = project_of(request)
        req = parse_model(RerunRequest, await body_json(request, optional=True))
        async with api_limits.gate(request).admitted(project, 1, "workflow reruns"):  # D173
            ex = await self.wf().rerun(
                project,
                request.match_info["execution"],
                from_task=req.from_task,
                failed_only=req.failed_only,
            )
        return ok(dump(ex))

    @documented(answer=Execution)
    async def cancel(self, request: web.Request) -> web.Response:
        ex = await self.wf().cancel(project_of(request), request.match_info["execution"])
        return ok(dump(ex))

    @documented(body=ReportRequest, body_required=False, answer=Execution)
    async def report(self, request: web.Request) -> web.Response:
        project = project_of(request)
        req = parse_model(ReportRequest, await body_json(request, optional=True))
        ex = await self.wf().report(
            project, request.match_info["key"], req.status, req.result, req.error
        )
        return ok(dump(ex))


def add_routes(app: web.Application, node: ApiContext) -> None:
    h = WorkflowApi(node)
    r = app.router
    base = "/api/v1/projects/{project}"
    r.add_get(f"{base}/workflows", h.list_workflows)
    r.add_post(f"{base}/workflows", h.create)
    r.add_get(f"{base}/workflows/{{workflow}}", h.get)
    r.add_put(f"{base}/workflows/{{workflow}}", h.put)
    r.add_delete(f"{base}/workflows/{{workflow}}", h.delete)
    r.add_post(f"{base}/workflows/{{workflow}}/executions", h.trigger)
    r.add_get(f"{base}/workflows/{{workflow}}/executions", h.list_executions)
    r.add_get(f"{base}/executions", h.list_executions)
    r.add_post(f"{base}/executions/report/{{key}}", h.report)
    r.add_get(f"{base}/executions/{{execution}}", h.get_execution)
    r.add_post(f"{base}/executions/{{execution}}/rerun", h.rerun)
    r.add_post(f"{base}/executions/{{execution}}/cancel", h.cancel)
