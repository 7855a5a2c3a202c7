"""HTTP routes of named hooks (issue 24 item 2; docs/api.md, "Hooks"; D268-D273).

Routes:
  GET    /api/v1/projects/{project}/hooks?limit=&after=   hooks, paged by name (viewer; no secret)
  GET    /api/v1/projects/{project}/hooks/{hook}          one hook (viewer; no secret)
  PUT    /api/v1/projects/{project}/hooks/{hook}          create or replace (editor); a new hook
                                                          without a ``secret`` gets one, answered
                                                          in this answer only
  DELETE /api/v1/projects/{project}/hooks/{hook}          (editor)
  POST   /api/v1/hooks/{project}/{hook}                   a delivery: no user credentials; the
                                                          hook's signature or token. 202 + run id
  POST   /register/{workflow}?project=default             the seed engine's form of a delivery
                                                          (D273)

A delivery is checked in an order that never tells a stranger whether a hook exists: first what
can be judged without the hook (content type, size, a credential present and well formed, the
signed timestamp's age), then the hook and its credential together: an unknown project, an unknown
hook, a disabled one and a wrong signature or token all answer the same 401 (D269). Only a sender
that proved it holds the hook's secret hears anything about the hook (its limits, its target).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from pydantic import BaseModel

from cluster.errors import (
    CronmeshError,
    InvalidInput,
    TooManyRequests,
    Unauthenticated,
)
from cluster.hook_store import DeliveryLeases, HookStore, Started
from cluster.hooks import (
    IDEMPOTENCY_HEADER,
    MAX_BODY,
    SIGNATURE_HEADER,
    HookRecord,
    HookSpec,
    body_digest,
    check_fresh,
    idempotency_digest,
    map_parameters,
    parse_signature,
    signature_matches,
    token_matches,
    valid_name,
)
from cluster.limits import Buckets
from cluster.models import TriggerRequest, parse_model
from nodes import metrics
from nodes.api import limits as api_limits
from nodes.api.access import ACCESS, PRINCIPAL, UnsupportedMediaType, client_address
from nodes.api.http import body_json, named_body, ok, page_query, project_of, require_store
from nodes.api.openapi import LIMIT, STR, documented

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

log = structlog.get_logger(__name__)

# Every refusal a stranger can cause without the hook's secret reads exactly this (D269).
REFUSED = "unknown hook, or wrong signature or token"
_DUMMY_SECRET = b"cronmesh-no-such-hook"


class BodyTooLarge(InvalidInput):
    code = "too_large"
    status = 413


class HookList(BaseModel):
    hooks: list[dict[str, Any]]
    next: str | None = None


class Delivery(BaseModel):
    hook: str
    project: str
    run: str | None = None
    execution: str | None = None
    replayed: bool = False


class HookApi:
    def __init__(self, node: ApiContext, clock: Any = time.time) -> None:
        self.node = node
        self.clock = clock  # wall clock: signed timestamps are unix seconds
        self.buckets = Buckets()  # per hook, per node (D271)
        self.leases = DeliveryLeases(node.etcd)

    def hooks(self) -> HookStore:
        return HookStore(require_store(self.node), self.node.secret_keys.ring, self.leases)

    # -- documents (editors write, viewers read) -----------------------------------------------

    @documented(answer=HookList, query={"limit": LIMIT, "after": STR})
    async def list_hooks(self, request: web.Request) -> web.Response:
        """A project's hooks, paged by name (never their secrets)"""
        project = project_of(request)
        after, limit = page_query(request)
        items, nxt = await self.hooks().list_page(project, limit=limit, after=after)
        return ok({"hooks": [h.public() for h in items], "next": nxt})

    @documented()
    async def get_hook(self, request: web.Request) -> web.Response:
        """One hook (never its secret)"""
        project, name = project_of(request), hook_name(request)
        return ok((await self.hooks().get(project, name)).public())

    @documented(body=HookSpec, also=("201",))
    async def put_hook(self, request: web.Request) -> web.Response:
        """Create or replace a hook; a generated secret is answered once, at creation"""
        project, name = project_of(request), hook_name(request)
        spec = parse_model(HookSpec, named_body(await body_json(request), name, ()))
        who = request[PRINCIPAL].name if PRINCIPAL in request else None
        record, created, generated = await self.hooks().put(project, spec, actor=who)
        out = record.public()
        if generated is not None:
            out["secret"] = generated  # the only answer that ever holds it (D268)
        return ok(out, 201 if created else 200)

    @documented(status="204")
    async def delete_hook(self, request: web.Request) -> web.Response:
        """Delete a hook (and what it remembers of idempotency keys)"""
        await self.hooks().delete(project_of(request), hook_name(request))
        return web.Response(status=204)

    # -- deliveries ----------------------------------------------------------------------------

    @documented(answer=Delivery, status="202", body={"type": "object"}, body_required=False)
    async def deliver(self, request: web.Request) -> web.Response:
        """Deliver an event to a hook: starts its job or workflow (signature or hook token)"""
        project = project_of(request)
        started = await self._audited(request, project, request.match_info["hook"], None)
        body = {
            "hook": request.match_info["hook"],
            "project": project,
            started.kind: started.id,
            "replayed": started.replayed,
        }
        resp = ok(body, 202)
        if started.replayed:
            resp.headers["Idempotent-Replayed"] = "true"
        return resp

    @documented(body={"type": "object"}, body_required=False, query={"project": STR})
    async def register(self, request: web.Request) -> web.Response:
        """The seed engine's POST /register/{workflow}: a delivery to the hook of that name,
        which must target a workflow (D273)"""
        project = request.query.get("project") or "default"
        if not valid_name(project):
            raise InvalidInput(f"invalid project name {project!r}", field="project")
        name = request.match_info["hook"]
        started = await self._audited(request, project, name, "workflow")
        resp = ok(
            {
                "status": "succeeded",
                "taskId": name,
                "project": project,
                "execution": started.id,
                "replayed": started.replayed,
            }
        )
        if started.replayed:  # the first delivery's answer again, said to be one (D321)
            resp.headers["Idempotent-Replayed"] = "true"
        return resp

    async def _audited(
        self, request: web.Request, project: str, name: str, kind: str | None
    ) -> Started:
        """One delivery; every refusal is audited, merged as refused requests are (D168)."""
        access = request.app[ACCESS]
        entry: dict[str, Any] = {
            "actor": f"hook:{name}"[:80],
            "via": "hook",
            "method": request.method,
            "path": request.path,
            "project": project,
            "address": client_address(request),
        }
        try:
            started = await self._deliver(request, project, name, kind)
        except (CronmeshError, web.HTTPException) as exc:
            status = int(getattr(exc, "status", 500))
            if status >= 400:
                reason = getattr(exc, "message", None) or getattr(exc, "reason", "")
                doc = {**entry, "status": status, "outcome": "hook_refused", "reason": reason}
                await access.record_denial(doc, source=f"address:{entry['address']}")
                metrics.HOOK_DELIVERIES.labels("refused", str(status)).inc()
            raise
        outcome = "replayed" if started.replayed else "started"
        metrics.HOOK_DELIVERIES.labels(outcome, "200" if kind else "202").inc()
        what = {started.kind: started.id, "replayed": started.replayed}
        doc = {**entry, "status": 200 if kind else 202, **what}
        if started.replayed:
            # a replay changes nothing and costs its sender nothing: merged, in the refusals'
            # budget, like them — one entry per changes each was a flood pushing the cluster's
            # history of changes out at the hook's rate (D284)
            await access.record_denial(
                {**doc, "outcome": "hook_replayed"}, source=f"address:{entry['address']}"
            )
        else:
            await access.record({**doc, "outcome": "ok"})
        return started

    async def _deliver(
        self, request: web.Request, project: str, name: str, kind: str | None
    ) -> Started:
        # 1. what needs no hook: content type, size, a well-formed credential, a fresh timestamp
        raw = await request.read()  # the app's client_max_size (1 MiB) already bounds it: 413
        if len(raw) > MAX_BODY:
            raise BodyTooLarge(f"body: at most {MAX_BODY} bytes", field="body")
        if raw.strip():
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise UnsupportedMediaType(
                    f"a hook takes Content-Type: application/json, not {ctype or 'none'!r}",
                    field="Content-Type",
                )
        sig_header = request.headers.get(SIGNATURE_HEADER)
        auth_header = request.headers.get("Authorization", "")
        timestamp, token = 0, None
        sigs: list[str] = []
        if sig_header is not None:
            timestamp, sigs = parse_signature(sig_header)
            check_fresh(timestamp, self.clock())
        elif auth_header:
            scheme, _, token = auth_header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated(
                    "Authorization must be 'Bearer <hook token>'", field="Authorization"
                )
        else:
            raise Unauthenticated(
                f"a delivery needs {SIGNATURE_HEADER} (t=<unix>,v1=<hmac>) or "
                "'Authorization: Bearer <hook token>'",
                field=SIGNATURE_HEADER,
            )
        # 2. the hook and its credential, answered alike for every failure (D269)
        store = self.hooks()
        found = await store.find(project, name) if valid_name(name) else None
        record = found[0] if found else None
        if not self._authentic(store, record, raw, timestamp, sigs, token):
            raise Unauthenticated(REFUSED)
        assert record is not None
        # 3. the sender proved it holds the secret: from here answers may speak of the hook
        if kind is not None and record.target.kind != kind:
            raise InvalidInput(
                f"hook {name!r} targets a {record.target.kind}; this form starts workflows",
                field="target",
            )
        if len(raw) > record.max_body_bytes:
            raise BodyTooLarge(
                f"body: {len(raw)} bytes; hook {name!r} takes at most {record.max_body_bytes}",
                field="body",
            )
        self._rate(record)
        payload = await body_json(request, optional=True)
        params = parse_model(
            TriggerRequest, {"parameters": map_parameters(record.parameters, payload)}
        ).parameters
        idem = request.headers.get(IDEMPOTENCY_HEADER)
        idempotency = (idempotency_digest(idem), body_digest(raw)) if idem is not None else None
        if idempotency is not None:
            seen = await store.replayed(record, *idempotency)
            if seen is not None:
                return seen
        what = "workflow executions" if record.target.kind == "workflow" else "runs"
        # the project's caps (D173) and, with a key, the hook's count of keys (D513)
        remembered = store.remembered(record) if idempotency is not None else None
        async with api_limits.gate(request).admitted(project, 1, what, remembered):
            started = await store.start(record, params, idempotency)
        log.info("hook delivery started", project=project, hook=name, **{started.kind: started.id})
        return started

    def _authentic(
        self,
        store: HookStore,
        record: HookRecord | None,
        raw: bytes,
        timestamp: int,
        sigs: list[str],
        token: str | None,
    ) -> bool:
        """Does the credential match the hook's secret? An unknown or disabled hook still costs
        one MAC, so the time taken does not single it out. A secret this node cannot open (no
        key file, a key missing from its ring, an altered record) fails like a wrong one — a
        503 would tell strangers the hook exists — and is logged for the operator."""
        secret, readable = _DUMMY_SECRET, False
        if record is None:
            store.decoy()  # the parse and the open an existing hook costs (D284)
        else:
            try:
                secret, readable = store.secret(record), True
            except CronmeshError as exc:
                log.error(
                    "hook secret unreadable: deliveries to this hook are refused",
                    project=record.project,
                    hook=record.name,
                    error=exc.message,
                )
        if token is not None:
            good = token_matches(secret, token)
            mode = "token"
        else:
            good = signature_matches(secret, timestamp, raw, sigs)
            mode = "signature"
        return good and readable and record is not None and record.enabled and record.auth == mode

    def _rate(self, record: HookRecord) -> None:
        """The hook's own rate, per node (D271); 429 with Retry-After."""
        key = f"{record.project}/{record.name}"
        rate = record.rate_per_minute / 60
        wait = self.buckets.take(key, 1, rate, record.burst, time.monotonic())
        if wait is not None:
            raise TooManyRequests(
                f"hook {record.name!r} takes {record.rate_per_minute} deliveries a minute "
                f"(burst {record.burst}) on this node; retry in {max(1, round(wait))} s",
                retry_after=wait,
                field="rate_per_minute",
            )


def hook_name(request: web.Request) -> str:
    name = request.match_info["hook"]
    if not valid_name(name):
        raise InvalidInput(f"invalid hook name {name!r}: [a-z0-9][a-z0-9-_.]{{0,62}}", field="name")
    return name


def add_routes(app: web.Application, node: ApiContext) -> None:
    api = HookApi(node)
    base = "/api/v1/projects/{project}/hooks"
    r = app.router
    r.add_get(base, api.list_hooks)
    r.add_get(base + "/{hook}", api.get_hook)
    r.add_put(base + "/{hook}", api.put_hook)
    r.add_delete(base + "/{hook}", api.delete_hook)
    r.add_post("/api/v1/hooks/{project}/{hook}", api.deliver)
    r.add_post("/register/{hook}", api.register)
