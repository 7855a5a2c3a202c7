"""The HTTP API every node serves (JSON under /api/v1, plus /healthz, /readyz, /status, /metrics).

Errors are always ``{"error": {"code", "message", "field"}}`` with a 4xx status for bad input;
they are mapped from ``CronmeshError`` in one middleware.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cluster.cron import next_times, parse_schedule
from cluster.election import current_leader
from cluster.errors import CronmeshError, InvalidInput, TooManyRequests, Unavailable
from cluster.ids import id_floor, is_id
from cluster.models import (
    NAME_PATTERN,
    READ_ONLY_JOB_FIELDS,
    BackfillRequest,
    Job,
    JobSpec,
    Run,
    RunAs,
    TriggerRequest,
    parse_model,
)
from cluster.store import Store
from nodes import api_limits, api_ops, api_placement, headers, metrics, webhooks
from nodes.openapi import LIMIT, STR, Health, JobList, Ready, RunList, documented
from nodes.runas import check_run_as

if TYPE_CHECKING:
    from nodes.daemon import Node

log = structlog.get_logger(__name__)

NODE: web.AppKey[Node] = web.AppKey("node")
_NAME = re.compile(NAME_PATTERN)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "field": field}}, status=status
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CronmeshError as exc:
        resp = error_response(exc.status, exc.code, exc.message, exc.field)
        if isinstance(exc, TooManyRequests):
            resp.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "http_error"
        )
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("unhandled error in API handler", path=request.path)
        return error_response(500, "internal", "internal error; see the node's log")


# Path parts that name a document, a run or a file (D160): checked before any handler sees them,
# so no handler can build an etcd key, a spool path or an object key from a bad one.
_NAMED_PARTS = ("project", "job", "workflow")
_ID_PARTS = ("run", "execution")


@web.middleware
async def path_parts_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    info = request.match_info
    for part in _NAMED_PARTS:
        value = info.get(part)
        if part == "project" and value == "*" and request.path.startswith("/api/v1/groups/"):
            continue  # a group granted to every project (D155)
        if value is not None and not _NAME.fullmatch(value):
            raise InvalidInput(f"invalid {part} name {value!r}", field=part)
    for part in _ID_PARTS:
        value = info.get(part)
        if value is not None and not is_id(value):
            raise InvalidInput(f"{part} must be an id (up to 19 digits), not {value!r}", field=part)
    return await handler(request)


@web.middleware
async def body_deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request body must arrive within ``http_body_timeout`` (a slowloris sending its body
    byte by byte): read it here, with the deadline, before anything else reads it (aiohttp keeps
    it for later reads); too slow answers 408 and closes the connection."""
    if request.body_exists:
        timeout = request.app[NODE].config.http_body_timeout
        try:
            async with asyncio.timeout(timeout):
                await request.read()
        except TimeoutError:
            resp = error_response(
                408, "request_timeout", f"the request body did not arrive within {timeout:g} s"
            )
            resp.force_close()
            return resp
    return await handler(request)


def dump(model: Any) -> Any:
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, default=str))


async def body_json(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; with ``optional`` an empty body reads as ``{}``."""
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise InvalidInput("request body must be a JSON object", field=None)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    return data


def named_body(data: dict[str, Any], name: str | None, read_only: Iterable[str]) -> dict[str, Any]:
    """A document's body without its read-only fields; its name is the one in the path, if any."""
    skip = set(read_only)
    data = {k: v for k, v in data.items() if k not in skip}
    if name is not None:
        if "name" in data and data["name"] != name:
            raise InvalidInput(
                f"name {data['name']!r} in the body differs from {name!r} in the path",
                field="name",
            )
        data["name"] = name
    return data


def _run_as(value: Any) -> RunAs:
    """A patch's ``run_as``, its errors naming ``run_as.<field>``."""
    try:
        return parse_model(RunAs, value)
    except InvalidInput as exc:
        field = f"run_as.{exc.field}" if exc.field else "run_as"
        raise InvalidInput(f"run_as.{exc.message}", field=field) from None


def project_of(request: web.Request) -> str:
    project = request.match_info["project"]
    if not _NAME.fullmatch(project):
        raise InvalidInput(f"invalid project name {project!r}", field="project")
    return project


def int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", field=name) from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be within {lo}..{hi}", field=name)
    return value


DEFAULT_PAGE = 500
MAX_PAGE = 1000


def page_query(request: web.Request) -> tuple[str | None, int]:
    """``after`` (a name: continue after it) and ``limit`` of a paged listing (D161)."""
    after = request.query.get("after") or None
    if after is not None and not _NAME.fullmatch(after):
        raise InvalidInput(f"after must be a name, not {after!r}", field="after")
    return after, int_query(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)


def _secrets_status(node: Node) -> dict[str, Any]:
    """Which secrets keys this node holds (ids only): what a rotation checks on every node."""
    ring = node.secret_keys.ring()
    if ring is None:
        return {"key_file": False, "current_key": None, "keys": []}
    return {"key_file": True, "current_key": ring.current, "keys": ring.ids}


def _time_query(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 time in the query (UTC when it names no zone), or None."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO 8601 time", field=name) from None
    if when.year < 1970:
        raise InvalidInput(f"{name} is before 1970", field=name)
    if when.year > 9998:  # its zone's offset could carry it past year 9999 (OverflowError)
        raise InvalidInput(f"{name} is after 9998", field=name)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def paged(
    request: web.Request,
    items: Iterable[Any],
    name: Callable[[Any], str],
    pattern: re.Pattern[str] = _NAME,
) -> tuple[list[Any], str | None]:
    """A page of a list read whole (small ones: users, groups, visible projects) by name, and
    the name to continue ``after``."""
    after = request.query.get("after") or None
    if after is not None and not pattern.fullmatch(after):
        raise InvalidInput(f"after must be a name, not {after!r}", field="after")
    limit = int_query(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    ordered = sorted(items, key=name)
    if after is not None:
        ordered = [i for i in ordered if name(i) > after]
    page = ordered[:limit]
    return page, (name(page[-1]) if len(ordered) > limit else None)


class Api:
    def __init__(self, node: Node) -> None:
        self.node = node

    def store(self) -> Store:
        # Usable while the node holds a session, also while it drains (readiness is separate).
        session, store = self.node.session, self.node.store
        if store is None or session is None or session.lost.is_set():
            raise Unavailable("this node is not connected to etcd")
        return store

    # -- health ---------------------------------------------------------------------------------

    @documented(answer=Health)
    async def healthz(self, request: web.Request) -> web.Response:
        return ok({"status": "ok", "node": self.node.node_id})

    @documented(answer=Ready, not_ready=True)
    async def readyz(self, request: web.Request) -> web.Response:
        ready = (
            self.node.ready
            and self.node.session is not None
            and not self.node.session.lost.is_set()
        )
        return ok({"ready": ready, "node": self.node.node_id}, 200 if ready else 503)

    @documented(text="text/plain")
    async def metrics_view(self, request: web.Request) -> web.Response:
        metrics.ETCD_SWITCHES.set(self.node.etcd.switches)
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def nodes(self) -> list[dict[str, Any]]:
        keys, etcd = self.node.keys, self.node.etcd
        infos = await etcd.range_all(keys.node_infos())
        live = await etcd.range_all(keys.nodes(), revision=infos.revision)
        up = {kv.key.rsplit("/", 1)[-1]: json.loads(kv.value) for kv in live.kvs}
        out = []
        for kv in infos.kvs:
            rec = json.loads(kv.value)
            rec.update(up.get(rec["id"], {}))
            rec["up"] = rec["id"] in up
            out.append(rec)
        return out

    @documented(not_ready=True)
    async def status(self, request: web.Request) -> web.Response:
        node = self.node
        data: dict[str, Any] = {
            "node": {
                "id": node.node_id,
                "address": node.config.advertise_address,
                "ready": node.ready,
                "leader": node.leading,
                "running": len(node.worker.running) if node.worker else 0,
                "capacity": node.config.capacity,
                "started_at": node.started_at.isoformat(),
                # how runs are contained: cgroup layout, kill, limits, fence (D150-D152)
                "containment": node.containment.status(),
                "secrets": _secrets_status(node),
            },
            "leader": None,
            "nodes": [],
            "queue_depth": None,
            "etcd": {
                "endpoints": node.config.etcd,
                "connected": False,
                "member": node.etcd.current_endpoint,  # where this node's calls go now
                "member_switches": node.etcd.switches,
            },
        }
        try:
            data["leader"] = await current_leader(node.etcd, node.keys)
            data["nodes"] = await self.nodes()
            queue = await node.etcd.range(node.keys.queue(), count_only=True)
            data["queue_depth"] = queue.count
            data["etcd"]["connected"] = True
        except Unavailable as exc:
            data["etcd"]["error"] = str(exc)
            return ok(data, 503)
        return ok(data)

    # -- jobs -----------------------------------------------------------------------------------

    @documented(answer=JobList, query={"after": STR, "limit": LIMIT})
    async def list_jobs(self, request: web.Request) -> web.Response:
        project = project_of(request)
        after, limit = page_query(request)
        jobs, more = await self.store().list_jobs(project, after=after, limit=limit)
        return ok({"jobs": [dump(j) for j in jobs], "next": more})

    async def _check_run_as(self, project: str, run_as: RunAs | None) -> None:
        """A job's run_as: allowed to its project, a known user (D142); else 403/400."""
        await check_run_as(self.node.etcd, self.node.keys, project, run_as)

    @staticmethod
    def _spec(data: dict[str, Any], name: str | None) -> JobSpec:
        return parse_model(JobSpec, named_body(data, name, READ_ONLY_JOB_FIELDS))

    @documented(body=JobSpec, answer=Job, status="201")
    async def create_job(self, request: web.Request) -> web.Response:
        project = project_of(request)
        data = await body_json(request)
        spec = self._spec(data, None)
        await self._check_run_as(project, spec.run_as)
        await webhooks.check_rule_docs(self.node, data.get("notifications"), "notifications")
        job, _ = await self.store().put_job(project, spec, create_only=True)
        return ok(dump(job), 201)

    @documented(body=JobSpec, answer=Job, also=("201",))
    async def put_job(self, request: web.Request) -> web.Response:
        project = project_of(request)
        data = await body_json(request)
        spec = self._spec(data, request.match_info["job"])
        await self._check_run_as(project, spec.run_as)
        await webhooks.check_rule_docs(self.node, data.get("notifications"), "notifications")
        job, created = await self.store().put_job(project, spec)
        return ok(dump(job), 201 if created else 200)

    @documented(body={"type": "object", "description": "Fields of a job to change"}, answer=Job)
    async def patch_job(self, request: web.Request) -> web.Response:
        project = project_of(request)
        patch = await body_json(request)
        for key in READ_ONLY_JOB_FIELDS:
            patch.pop(key, None)
        if patch.get("run_as") is not None:
            await self._check_run_as(project, _run_as(patch["run_as"]))
        await webhooks.check_rule_docs(self.node, patch.get("notifications"), "notifications")
        job = await self.store().patch_job(project, request.match_info["job"], patch)
        return ok(dump(job))

    @documented(answer=Job)
    async def get_job(self, request: web.Request) -> web.Response:
        job = await self.store().get_job(project_of(request), request.match_info["job"])
        return ok(dump(job))

    @documented(status="204")
    async def delete_job(self, request: web.Request) -> web.Response:
        await self.store().delete_job(project_of(request), request.match_info["job"])
        return web.Response(status=204)

    @documented(body=TriggerRequest, body_required=False, answer=Run, status="201")
    async def trigger(self, request: web.Request) -> web.Response:
        project = project_of(request)
        req = parse_model(TriggerRequest, await body_json(request, optional=True))
        store = self.store()
        await api_limits.gate(request).admit(project, 1)
        run = await store.trigger(project, request.match_info["job"], req.parameters)
        return ok(dump(run), 201)

    @documented(query={"limit": LIMIT})
    async def ticks(self, request: web.Request) -> web.Response:
        project, name = project_of(request), request.match_info["job"]
        limit = int_query(request, "limit", 50, 1, 1000)
        store = self.store()
        job: Job = await store.get_job(project, name)
        records = await store.tick_records(project, name, limit)
        state = await store.schedule_state(project, name)
        events = list(reversed(state.get("events", [])))
        upcoming: list[dict[str, Any]] = []
        now = store.clock()
        for spec in job.schedules if job.enabled else []:
            if not spec.enabled:
                continue
            sched = parse_schedule(
                cron=spec.cron, at=spec.at, timezone=spec.timezone, hash_key=f"{project}/{name}"
            )
            # a tick already planned (runs are written ahead of their tick, D120) is not next
            last = state.get("schedules", {}).get(spec.fingerprint(), {}).get("last_tick")
            after = max(now, datetime.fromisoformat(last)) if last else now
            upcoming += [
                {
                    "tick": t.isoformat(),
                    "schedule": spec.fingerprint(),
                    "cron": spec.cron,
                    "timezone": spec.timezone,
                }
                for t in next_times(sched, after, 10)
            ]
        upcoming.sort(key=lambda t: t["tick"])
        return ok(
            {
                "job": name,
                "enabled": job.enabled,
                "ticks": records,
                "not_fired": events,
                "next": upcoming[:10],
            }
        )

    @documented(body=BackfillRequest, also=("201",))
    async def backfill(self, request: web.Request) -> web.Response:
        project = project_of(request)
        req = parse_model(BackfillRequest, await body_json(request))
        admit = api_limits.gate(request).admit
        out = await self.store().backfill(
            project,
            request.match_info["job"],
            req.from_,
            req.to,
            admit=lambda n: admit(project, n, "backfilled runs"),
        )
        return ok(out, 201 if out["created"] else 200)

    # -- runs -----------------------------------------------------------------------------------

    @documented(
        answer=RunList,
        query={
            "job": STR,
            "status": STR,
            "q": STR,
            "from": STR,
            "to": STR,
            "before": STR,
            "limit": LIMIT,
        },
    )
    async def list_runs(self, request: web.Request) -> web.Response:
        if request.query.get("archived", "0") not in ("0", "false", ""):
            from nodes.api_logs import list_archived  # imports this module

            return await list_archived(self.node, request)
        project = project_of(request)
        job = request.query.get("job") or None
        if job is not None and not _NAME.fullmatch(job):
            raise InvalidInput(f"invalid job name {job!r}", field="job")
        status = request.query.get("status") or None
        if status is not None and status not in (
            "pending",
            "running",
            "succeeded",
            "failed",
            "timed_out",
            "cancelled",
            "lost",
            "skipped",
        ):
            raise InvalidInput(f"unknown status {status!r}", field="status")
        before = request.query.get("before") or None
        if before is not None and not is_id(before):
            raise InvalidInput("before must be a run id", field="before")
        limit = int_query(request, "limit", 50, 1, 1000)
        contains = request.query.get("q", "").strip() or None
        if contains is not None and len(contains) > 200:
            raise InvalidInput("q is longer than 200 characters", field="q")
        since, until = _time_query(request, "from"), _time_query(request, "to")
        if since and until and since >= until:
            raise InvalidInput("from must be before to", field="from")
        if until is not None:
            before = min(before, id_floor(until)) if before else id_floor(until)
        runs, after = await self.store().page_runs(
            project,
            job=job,
            status=status,
            contains=contains,
            since=id_floor(since) if since else None,
            limit=limit,
            before=before,
        )
        annotated = await api_placement.annotate_runs(self.node, [dump(r) for r in runs])
        return ok({"runs": annotated, "next": after})

    @documented(answer=Run)
    async def get_run(self, request: web.Request) -> web.Response:
        run = await self.store().get_run(project_of(request), request.match_info["run"])
        return ok((await api_placement.annotate_runs(self.node, [dump(run)]))[0])

    @documented(answer=Run, status="202")
    async def cancel(self, request: web.Request) -> web.Response:
        action = "abort" if request.path.endswith("/abort") else "cancel"
        run = await self.store().cancel_run(project_of(request), request.match_info["run"], action)
        return ok(dump(run), 202)

    # -- wiring ---------------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        r = app.router
        base = "/api/v1/projects/{project}"
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/status", self.status)
        r.add_get("/metrics", self.metrics_view)
        r.add_get(f"{base}/jobs", self.list_jobs)
        r.add_post(f"{base}/jobs", self.create_job)
        r.add_get(f"{base}/jobs/{{job}}", self.get_job)
        r.add_put(f"{base}/jobs/{{job}}", self.put_job)
        r.add_patch(f"{base}/jobs/{{job}}", self.patch_job)
        r.add_delete(f"{base}/jobs/{{job}}", self.delete_job)
        r.add_post(f"{base}/jobs/{{job}}/runs", self.trigger)
        r.add_get(f"{base}/jobs/{{job}}/ticks", self.ticks)
        r.add_post(f"{base}/jobs/{{job}}/backfill", self.backfill)
        r.add_get(f"{base}/runs", self.list_runs)
        r.add_get(f"{base}/runs/{{run}}", self.get_run)
        r.add_post(f"{base}/runs/{{run}}/cancel", self.cancel)
        r.add_post(f"{base}/runs/{{run}}/abort", self.cancel)


def make_app(node: Node) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, body_deadline_middleware], client_max_size=1024 * 1024
    )
    app[NODE] = node
    from nodes import (  # they use this module's helpers
        api_auth,
        api_logs,
        api_notify,
        api_secrets,
        api_ui,
        api_workflows,
    )

    headers.install(app)  # nosniff and a CSP on every answer (issue 19 item 21)

    Api(node).routes(app)
    api_auth.add_routes(app, node)  # identity and access (issue 6)
    app.middlewares.append(path_parts_middleware)  # after access: strangers get 401/403 first
    api_notify.add_middleware(app)  # secrets and URLs of webhooks redacted in answers (D172)
    api_limits.add_routes(app, node)  # settings: webhook allow-list, run caps (D170, D173)
    api_placement.add_routes(app, node)  # placement (issue 5)
    api_workflows.add_routes(app, node)  # workflows (issue 4)
    api_ops.add_routes(app, node)  # operations, OpenAPI (issue 8)
    api_logs.add_routes(app, node)  # logs: live tail, store, archive (issue 3)
    api_ui.add_routes(app, node)  # web UI and cron preview (issue 7)
    api_secrets.add_routes(app, node)  # project secrets (issue 18)
    return app


class HeadDeadlineHandler(RequestHandler):
    """aiohttp's request handler with a deadline on reading a request's head (request line and
    headers): a connection that has not sent a whole head ``head_timeout`` seconds after it
    opened, or after the first byte of its next request, is closed (slowloris, #19 item 16).
    aiohttp has no such timeout of its own; idle keep-alive connections are closed by
    ``keepalive_timeout``; bodies by ``body_deadline_middleware`` and ``client_max_size``."""

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        reading_head = self._payload_parser is None and not self._upgraded
        super().data_received(data)
        if not reading_head:
            return
        if self._request_count > heads:
            self._disarm()  # a whole head arrived
        elif data and self._head_timer is None:
            self._arm()  # the first bytes of a next request: its head has the same deadline

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._head_timeout, self._expire, self._request_count)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expire(self, heads: int) -> None:
        self._head_timer = None
        if self._request_count == heads:  # still no whole head
            log.debug("closing a connection that sent no whole request in time")
            self.force_close()


class HeadDeadlineSite(web.TCPSite):
    """``TCPSite`` whose connections are ``HeadDeadlineHandler``s."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        head_timeout: float,
        keepalive_timeout: float,
    ) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self._handler_args: dict[str, Any] = {
            "head_timeout": head_timeout,
            "keepalive_timeout": keepalive_timeout,
            # after an early answer (408, 413) aiohttp reads what is left of the body this long
            # (10 s by default) so the client sees the answer; a slow body needs no more
            "lingering_time": 2.0,
            "access_log": None,
        }

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        args = self._handler_args
        self._server = await loop.create_server(
            lambda: HeadDeadlineHandler(server, loop=loop, **args),
            self._host,
            self._port,
            reuse_address=self._reuse_address,
        )


async def start_api(node: Node) -> web.AppRunner:
    runner = web.AppRunner(make_app(node), access_log=None, handle_signals=False)
    await runner.setup()
    site = HeadDeadlineSite(
        runner,
        node.config.listen_host,
        node.config.listen_port,
        head_timeout=node.config.http_head_timeout,
        keepalive_timeout=node.config.http_keepalive_timeout,
    )
    await site.start()
    return runner
