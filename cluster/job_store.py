"""Jobs in etcd: their reads, and the API's writes of them. A create, replace or patch is one
transaction that compares the job's revision and every document it names (group, secrets,
upstreams, calendars, budgets: one compare each, D146, D155, D236, D293), after its project's
quotas are checked; a delete takes the job's schedule state, ticks and slots with it. A base of
:class:`cluster.store.Store`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from cluster.budget_store import budget_guards, named
from cluster.calendar_store import calendar_guards
from cluster.depends_store import depends_guards
from cluster.errors import Conflict, InvalidInput, JobNotFound
from cluster.etcd import Compare, Op
from cluster.groups import target_guards
from cluster.models import Job, JobSpec, active_since, parse_model
from cluster.notify import keep_secrets
from cluster.quota_store import QuotaStore
from cluster.runs import dumps
from cluster.secret_store import reference_guards, references
from cluster.txnfit import fit_compares


class JobStore(QuotaStore):
    """The jobs part of ``Store`` (its etcd, keys, clock and quotas are the store's)."""

    clock: Callable[[], datetime]

    async def get_job_kv(self, project: str, name: str) -> tuple[Job, int]:
        kv = await self.etcd.get(self.keys.job(project, name))
        if kv is None:
            raise JobNotFound(f"job {name!r} not found in project {project!r}", field="name")
        return Job.model_validate_json(kv.value), kv.mod_revision

    async def get_job(self, project: str, name: str) -> Job:
        return (await self.get_job_kv(project, name))[0]

    async def list_jobs(
        self, project: str, *, after: str | None = None, limit: int = 1000
    ) -> tuple[list[Job], str | None]:
        """A page of the project's jobs by name, and the name to continue ``after`` (None at
        the end)."""
        base = self.keys.jobs(project)
        res = await self.etcd.range_page(base, after=after, limit=limit)
        jobs = [Job.model_validate_json(kv.value) for kv in res.kvs]
        return jobs, (res.kvs[-1].key[len(base) :] if res.more and res.kvs else None)

    async def list_projects(self) -> list[str]:
        res = await self.etcd.range_all(self.keys.projects(), keys_only=True)
        return [kv.key.rsplit("/", 1)[-1] for kv in res.kvs]

    def _merge(self, project: str, spec: JobSpec, old: Job | None) -> Job:
        now = self.clock()
        if spec.notifications:  # secrets are write-only: left out means "keep" (D172)
            rules = keep_secrets(
                spec.notifications, old.notifications if old else None, "notifications"
            )
            spec = spec.model_copy(update={"notifications": rules})
        return Job(
            **spec.model_dump(),
            project=project,
            created_at=old.created_at if old else now,
            updated_at=now,
            active_since=active_since(old, spec, now),
        )

    async def put_job(
        self, project: str, spec: JobSpec, *, create_only: bool = False
    ) -> tuple[Job, bool]:
        """Create or replace a job atomically; answers (job, created)."""
        key = self.keys.job(project, spec.name)
        for _ in range(5):
            kv = await self.etcd.get(key)
            if kv is not None and create_only:
                raise Conflict(f"job {spec.name!r} already exists", field="name")
            old = Job.model_validate_json(kv.value) if kv else None
            job = self._merge(project, spec, old)
            doc = job.model_dump_json()
            await self.check_quota(
                project,
                "job",
                creating=kv is None,
                old_size=len(kv.value) if kv else 0,
                new_size=len(doc),
            )
            ops = [Op.put(key, doc), *self.size_ops(project, "job", spec.name, doc)]
            compares = [Compare.modified(key, kv.mod_revision if kv else 0)]
            compares += await self._guards(project, spec, job)
            if kv is None:
                ops.append(Op.put_if_absent(self.keys.project(project), dumps({"name": project})))
            res = await self.etcd.txn(compares, ops)
            if res.succeeded:
                return job, kv is None
        raise Conflict(f"job {spec.name!r} is being changed concurrently; retry", field="name")

    async def target_guards(self, project: str, spec: JobSpec) -> list[Any]:
        """A job may target only a group granted to its project (D155): 403 naming the group."""
        if spec.target.group is None:
            return []
        return await target_guards(
            self.etcd, self.keys, project, [("target.group", spec.target.group)]
        )

    async def patch_job(self, project: str, name: str, patch: dict[str, Any]) -> Job:
        if "name" in patch and patch["name"] != name:
            raise InvalidInput("name: cannot be changed by a patch", field="name")
        for _ in range(5):
            old, rev = await self.get_job_kv(project, name)
            merged = {**old.spec().model_dump(mode="json", exclude_unset=False), **patch}
            spec = parse_model(JobSpec, merged)
            job = self._merge(project, spec, old)
            key = self.keys.job(project, name)
            doc = job.model_dump_json()
            old_doc = old.model_dump_json()
            await self.check_quota(
                project,
                "job",
                creating=False,
                old_size=len(old_doc),
                new_size=len(doc),
            )
            guards = await self._guards(project, spec, job)
            res = await self.etcd.txn(
                [Compare.modified(key, rev), *guards],
                [Op.put(key, doc), *self.size_ops(project, "job", name, doc)],
            )
            if res.succeeded:
                return job
        raise Conflict(f"job {name!r} is being changed concurrently; retry", field="name")

    async def _guards(self, project: str, spec: JobSpec, doc: JobSpec) -> list[Any]:
        """Every group, secret (D146), upstream (with no cycle, D293), calendar (D236) and
        budget the document names exists and stays while it is written: one compare each, all
        in the write's one transaction (at most etcd's 128 together, ``cluster.txnfit``)."""
        refs = references(doc.model_dump(mode="json", include={"env"}))
        parts = [
            ("target.group", await self.target_guards(project, spec)),
            ("env", await reference_guards(self.etcd, self.keys, project, refs)),
            (
                "schedules",
                await depends_guards(
                    self.etcd, self.keys, project, ("job", doc.name), doc.schedules
                )
                + await calendar_guards(self.etcd, self.keys, project, doc),
            ),
            (
                "budgets",
                await budget_guards(
                    self.etcd, self.keys, project, named({"budgets": spec.budgets})
                ),
            ),
        ]
        fit_compares(parts)
        return [guard for _, guards in parts for guard in guards]

    async def delete_job(self, project: str, name: str) -> None:
        key = self.keys.job(project, name)
        res = await self.etcd.txn(
            [Compare.exists(key)],
            [
                Op.delete(key),
                *self.size_deletes(project, "job", name),
                Op.delete(self.keys.schedule_state(project, name)),
                Op.delete(self.keys.ticks(project, name), prefix=True),
                Op.delete(self.keys.open_slots(project, name), prefix=True),
                Op.delete(self.keys.waitings(project, name), prefix=True),
                Op.delete(self.keys.slot_alarm(project, name)),
            ],
        )
        if not res.succeeded:
            raise JobNotFound(f"job {name!r} not found in project {project!r}", field="name")
