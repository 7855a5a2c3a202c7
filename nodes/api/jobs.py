"""Health, status and metrics; jobs (CRUD, trigger, ticks, backfill) and runs (list, get,
cancel)."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cluster import params
from cluster.calendar_store import annotate_next, freeze_status
from cluster.cron import next_times
from cluster.cron_dst import fire_flags
from cluster.election import current_leader
from cluster.errors import InvalidInput, Unavailable
from cluster.fields import NAME_RULE
from cluster.ids import id_floor, is_id
from cluster.models import (
    READ_ONLY_JOB_FIELDS,
    BackfillRequest,
    Job,
    JobSpec,
    Run,
    RunAs,
    TriggerRequest,
    parse_model,
)
from cluster.reruns import rerun_slot
from cluster.runcodec import snapshot_cache
from cluster.store import Store
from nodes import metrics, webhooks
from nodes.api import limits as api_limits
from nodes.api import placement as api_placement
from nodes.api.budgets import budget_status
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
    time_query,
)
from nodes.api.logs import list_archived
from nodes.api.openapi import LIMIT, STR, Health, JobList, Ready, RunList, documented
from nodes.api.shards import shards_status
from nodes.api.slots import event_outcome, with_outcome
from nodes.api.waiting import WAITING, waiting_runs
from nodes.executor.runas import check_run_as

if TYPE_CHECKING:
    from nodes.api.context import ApiContext


# Other spellings of a run status a query may use: the API says `cancelled` (British, as the
# run documents, the UI and the docs do); the American spelling is accepted on input.
STATUS_SPELLINGS = {"canceled": "cancelled"}


def _secrets_status(node: ApiContext) -> dict[str, Any]:
    """Which secrets keys this node holds (ids only): what a rotation checks on every node."""
    ring = node.secret_keys.ring()
    if ring is None:
        return {"key_file": False, "current_key": None, "keys": []}
    return {"key_file": True, "current_key": ring.current, "keys": ring.ids}


def _run_as(value: Any) -> RunAs:
    """A patch's ``run_as``, its errors naming ``run_as.<field>``."""
    try:
        return parse_model(RunAs, value)
    except InvalidInput as exc:
        field = f"run_as.{exc.field}" if exc.field else "run_as"
        raise InvalidInput(f"run_as.{exc.message}", field=field) from None


class Api:
    def __init__(self, node: ApiContext) -> None:
        self.node = node

    def store(self) -> Store:
        return require_store(self.node)

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
        for family, events in list(self.node.etcd.watch_events.items()):
            metrics.WATCH_EVENTS.labels(family.rsplit("/", 1)[-1]).set(events)
        for family, responses in list(self.node.etcd.watch_responses.items()):
            metrics.WATCH_RESPONSES.labels(family.rsplit("/", 1)[-1]).set(responses)
        snapshots = snapshot_cache(JobSpec)
        metrics.RUN_SNAPSHOTS.labels("validated").set(snapshots.misses)
        metrics.RUN_SNAPSHOTS.labels("reused").set(snapshots.hits)
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
                "shards": node.shards_led,  # the scheduler shards it leads (D303)
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
            data["shards"] = await shards_status(node)  # K and each shard's leader (D303)
            data["nodes"] = await self.nodes()
            queue = await node.etcd.range(node.keys.queue(), count_only=True)
            data["queue_depth"] = queue.count
            data["budgets"] = await budget_status(node)  # slots held, starts (D277)
            data["freeze"] = await freeze_status(node.etcd, node.keys)  # D239
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
        hold = await self.store().creation_hold(project, "job", spec.name)  # D515
        async with api_limits.gate(request).admitted(project, 0, "jobs", hold):
            job, _ = await self.store().put_job(project, spec, create_only=True)
        return ok(self._saved(job), 201)

    @documented(body=JobSpec, answer=Job, also=("201",))
    async def put_job(self, request: web.Request) -> web.Response:
        project = project_of(request)
        data = await body_json(request)
        spec = self._spec(data, request.match_info["job"])
        await self._check_run_as(project, spec.run_as)
        await webhooks.check_rule_docs(self.node, data.get("notifications"), "notifications")
        hold = await self.store().creation_hold(project, "job", spec.name)  # D515
        async with api_limits.gate(request).admitted(project, 0, "jobs", hold):
            job, created = await self.store().put_job(project, spec)
        return ok(self._saved(job), 201 if created else 200)

    def _saved(self, job: Job) -> dict[str, Any]:
        hash_key = f"{job.project}/{job.name}"
        return with_dst_warnings(dump(job), job.schedules, hash_key, self.store().clock())

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
        return ok(self._saved(job))

    @documented(answer=Job)
    async def get_job(self, request: web.Request) -> web.Response:
        job = await self.store().get_job(project_of(request), request.match_info["job"])
        return ok(dump(job))

    @documented(status="204")
    async def delete_job(self, request: web.Request) -> web.Response:
        project, name = project_of(request), request.match_info["job"]
        await self.store().delete_job(project, name)
        # its runs that have not started go with it (kept in the history as cancelled)
        await self.store().cancel_pending_of(project, name)
        return web.Response(status=204)

    @documented(body=TriggerRequest, body_required=False, answer=Run, status="201")
    async def trigger(self, request: web.Request) -> web.Response:
        project = project_of(request)
        req = parse_model(TriggerRequest, await body_json(request, optional=True))
        store = self.store()
        name = request.match_info["job"]
        job: Job = await store.get_job(project, name)
        names = params.declared(job.parameters, (s.parameters for s in job.schedules))
        warnings = params.check_given(
            f"job {name}", names, req.parameters
        )  # 400 if declared (D254)
        async with api_limits.gate(request).admitted(project, 1):
            run = await store.trigger(project, name, req.parameters)
        return ok({**dump(run), **({"warnings": warnings} if warnings else {})}, 201)

    @documented(query={"limit": LIMIT})
    async def ticks(self, request: web.Request) -> web.Response:
        project, name = project_of(request), request.match_info["job"]
        limit = int_query(request, "limit", 50, 1, 1000)
        store = self.store()
        job: Job = await store.get_job(project, name)
        records = [with_outcome(r) for r in await store.tick_records(project, name, limit)]
        state = await store.schedule_state(project, name)
        events = [event_outcome(e) for e in reversed(state.get("events", []))]
        upcoming: list[dict[str, Any]] = []
        now = store.clock()
        for spec in job.schedules if job.enabled else []:
            if not spec.enabled:
                continue
            sched = spec.parse(f"{project}/{name}")
            # a tick already planned (runs are written ahead of their tick, D120) is not next
            last = state.get("schedules", {}).get(spec.fingerprint(), {}).get("last_tick")
            after = max(now, datetime.fromisoformat(last)) if last else now
            times = next_times(sched, after, 10)
            upcoming += [
                {
                    "tick": t.isoformat(),
                    "schedule": spec.fingerprint(),
                    "cron": spec.cron,
                    "timezone": spec.timezone,
                    "dst": flag,  # next to a DST transition (D223)
                }
                for t, flag in zip(times, fire_flags(sched, after, times), strict=True)
            ]
        upcoming.sort(key=lambda t: t["tick"])
        upcoming = await annotate_next(store, job, upcoming[:10])  # calendars, windows (D238)
        return ok(
            {
                "job": name,
                "enabled": job.enabled,
                "ticks": records,
                "not_fired": events,
                "next": upcoming,
            }
        )

    @documented(body=BackfillRequest, also=("201",))
    async def backfill(self, request: web.Request) -> web.Response:
        project = project_of(request)
        req = parse_model(BackfillRequest, await body_json(request))
        admitted = api_limits.gate(request).admitted
        async with contextlib.AsyncExitStack() as held:  # the runs' hold ends once written
            out = await self.store().backfill(
                project,
                request.match_info["job"],
                req.from_,
                req.to,
                admit=lambda n: held.enter_async_context(admitted(project, n, "backfilled runs")),
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
            return await list_archived(self.node, request)
        project = project_of(request)
        job = request.query.get("job") or None
        if job is not None and not NAME_RE.fullmatch(job):
            raise InvalidInput(f"invalid job name {job!r}: {NAME_RULE}", field="job")
        status = request.query.get("status") or None
        status = STATUS_SPELLINGS.get(status or "", status)  # `canceled` is `cancelled` (D254)
        if status is not None and status not in (
            "pending",
            "running",
            "succeeded",
            "failed",
            "timed_out",
            "cancelled",
            "lost",
            "skipped",
            WAITING,  # pending, held back by a budget (computed, D320)
        ):
            raise InvalidInput(f"unknown status {status!r}", field="status")
        before = request.query.get("before") or None
        if before is not None and not is_id(before):
            raise InvalidInput("before must be a run id", field="before")
        limit = int_query(request, "limit", 50, 1, 1000)
        contains = request.query.get("q", "").strip() or None
        if contains is not None and len(contains) > 200:
            raise InvalidInput("q is longer than 200 characters", field="q")
        since, until = time_query(request, "from"), time_query(request, "to")
        if since and until and since >= until:
            raise InvalidInput("from must be before to", field="from")
        if until is not None:
            before = min(before, id_floor(until)) if before else id_floor(until)
        if status == WAITING:
            docs, after = await waiting_runs(
                self.node, self.store(), project, job=job, contains=contains,
                since=id_floor(since) if since else None, limit=limit, before=before,
            )  # fmt: skip
            return ok({"runs": docs, "next": after})
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

    @documented(answer=Run, status="201")
    async def rerun(self, request: web.Request) -> web.Response:
        """A finished slot run again, at its slot: the slot then stands for the new run (D295)."""
        project = project_of(request)
        async with api_limits.gate(request).admitted(project, 1, "reruns"):
            run = await rerun_slot(self.store(), project, request.match_info["run"])
        return ok(dump(run), 201)

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
        r.add_post(f"{base}/runs/{{run}}/rerun", self.rerun)
