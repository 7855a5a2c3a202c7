"""Project quotas on the store: limits, usage, the size indexes written with each document
(D162) and the run-history check at run creation (D318). A base of :class:`cluster.store.Store`."""

from __future__ import annotations

import json
from typing import Any

from cluster.etcd import Compare, Etcd, Op
from cluster.history import over_quota, parse_bytes
from cluster.keys import Keys
from cluster.limits import Counted
from cluster.quotas import Kind, Quotas, exceeded, refusal


class QuotaStore:
    """The quota part of ``Store`` (its etcd, keys and default quotas are the store's)."""

    etcd: Etcd
    keys: Keys
    quotas: Quotas  # the cluster-wide defaults (the node sets its config's)

    async def project_limits(self, project: str) -> Quotas:
        """The project's quotas: the defaults with the project record's overrides."""
        kv = await self.etcd.get(self.keys.project(project))
        return self._limits(kv.value if kv is not None else None)

    def _limits(self, record: bytes | None) -> Quotas:
        """The defaults with the overrides of a project record (None: no record)."""
        overrides = json.loads(record).get("quotas") if record is not None else None
        return self.quotas.overridden(overrides if isinstance(overrides, dict) else None)

    async def project_usage(self, project: str) -> dict[str, int]:
        """Jobs, workflows and bytes of their documents the project holds now."""
        jobs = await self.etcd.range(self.keys.jobs(project), count_only=True)
        flows = await self.etcd.range(self.keys.workflows(project), count_only=True)
        return {
            "jobs": jobs.count,
            "workflows": flows.count,
            "bytes": await self._doc_bytes(project, jobs.count + flows.count),
            "run_history_bytes": await self.history_used(project),
        }

    async def history_used(self, project: str) -> int:
        """The project's run-history charges as the leader last summed them (D318)."""
        kv = await self.etcd.get(self.keys.history_used(project))
        return parse_bytes(kv.value if kv is not None else None)

    async def check_history(self, project: str, adding: int) -> None:
        """Raise ``QuotaExceeded`` (``quotas.run_history_bytes``) when records charged
        ``adding`` bytes would pass the project's run-history quota (D318). Read before the
        creating transaction: creations between two of the leader's counts may overshoot by
        what they add (docs/security.md)."""
        used = await self.history_used(project)
        limits = await self.project_limits(project)
        if over_quota(used, adding, limits.run_history_bytes):
            raise refusal("run_history_bytes", limits, project)

    def size_ops(self, project: str, kind: Kind, name: str, doc: str) -> list[Any]:
        """The index entry written with a job's or workflow's document (D162)."""
        return [Op.put(self.keys.doc_size(project, kind, name), str(len(doc)))]

    def size_deletes(self, project: str, kind: Kind, name: str) -> list[Any]:
        # history-sizes: D210's bounds, written before D318; removed with their document
        return [
            Op.delete(self.keys.doc_size(project, kind, name)),
            Op.delete(self.keys.history_size(project, kind, name)),
        ]

    async def _doc_bytes(self, project: str, docs: int) -> int:
        """The sum of the project's document-size index (D162)."""
        prefix = self.keys.doc_sizes(project)
        sizes = await self.etcd.range_all(prefix)
        if len(sizes.kvs) < docs:  # documents written before the index existed: measured once
            await self._record_sizes(project, {kv.key for kv in sizes.kvs})
            sizes = await self.etcd.range_all(prefix)
        total = 0
        for kv in sizes.kvs:
            try:
                total += int(kv.value)
            except ValueError:
                continue
        return total

    async def _record_sizes(self, project: str, known: set[str]) -> None:
        kind: Kind
        for kind, prefix in (
            ("job", self.keys.jobs(project)),
            ("workflow", self.keys.workflows(project)),
        ):
            async for page in self.etcd.range_pages(prefix):
                for kv in page.kvs:
                    name = kv.key[len(prefix) :]
                    size_key = self.keys.doc_size(project, kind, name)
                    value = len(kv.value)
                    if size_key in known:
                        continue
                    # only while the document is still this one (a concurrent write records its own)
                    await self.etcd.txn(
                        [Compare.modified(kv.key, kv.mod_revision)],
                        [Op.put(size_key, str(value))],
                    )

    async def creation_hold(self, project: str, kind: Kind, name: str) -> Counted | None:
        """What a write of ``name`` holds a place in until it is written, when it would create
        the document: the project's jobs or workflows, at most its quota, so concurrent
        creations cannot all pass one count (the run gate's hold, D515). None when it exists: a
        replacement adds none (and a racing creation of the same name loses its compare)."""
        key = self.keys.job(project, name) if kind == "job" else self.keys.workflow(project, name)
        res = await self.etcd.txn([], [Op.get(key), Op.get(self.keys.project(project))])
        if res.range_kvs(0):
            return None
        record = res.range_kvs(1)
        limits = self._limits(record[0].value if record else None)
        quota = "jobs" if kind == "job" else "workflows"
        prefix = self.keys.jobs(project) if kind == "job" else self.keys.workflows(project)
        return Counted(prefix, getattr(limits, quota), lambda _: refusal(quota, limits, project))

    async def check_quota(
        self,
        project: str,
        kind: Kind,
        *,
        creating: bool,
        old_size: int,
        new_size: int,
    ) -> None:
        """Raise ``QuotaExceeded`` when writing this document would exceed a quota. Checked
        before the write's transaction: concurrent creates may overshoot by their number. (Run
        history is checked when runs are created, ``check_history``: D318.)"""
        growing = new_size > old_size
        if not creating and not growing:
            return
        limits = await self.project_limits(project)
        prefix = self.keys.jobs(project) if kind == "job" else self.keys.workflows(project)
        count = (await self.etcd.range(prefix, count_only=True)).count if creating else 0
        total = 0
        if growing:
            docs = (await self.etcd.range(self.keys.jobs(project), count_only=True)).count + (
                await self.etcd.range(self.keys.workflows(project), count_only=True)
            ).count
            total = await self._doc_bytes(project, docs)
        over = exceeded(
            limits,
            kind,
            count=count,
            total_bytes=total,
            creating=creating,
            old_size=old_size,
            new_size=new_size,
        )
        if over is not None:
            raise refusal(over, limits, project)
