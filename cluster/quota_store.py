"""Project quotas on the store: limits, usage, and the size indexes written with each document
(D162, D210). A base of :class:`cluster.store.Store`."""

from __future__ import annotations

import json
from typing import Any

from cluster.etcd import Compare, Etcd, Op
from cluster.keys import Keys
from cluster.quotas import Kind, Quotas, exceeded, history_of_size, refusal


def history_bytes(kind: Kind, doc: str | bytes) -> int:
    """The run history bound of a stored document (D210); an unreadable one counts as its size."""
    try:
        value = json.loads(doc)
    except ValueError:
        return len(doc)
    if not isinstance(value, dict):
        return len(doc)
    return history_of_size(kind, value, len(doc))


class QuotaStore:
    """The quota part of ``Store`` (its etcd, keys and default quotas are the store's)."""

    etcd: Etcd
    keys: Keys
    quotas: Quotas  # the cluster-wide defaults (the node sets its config's)

    async def project_limits(self, project: str) -> Quotas:
        """The project's quotas: the defaults with the project record's overrides."""
        kv = await self.etcd.get(self.keys.project(project))
        overrides = json.loads(kv.value).get("quotas") if kv is not None else None
        return self.quotas.overridden(overrides if isinstance(overrides, dict) else None)

    async def project_usage(self, project: str) -> dict[str, int]:
        """Jobs, workflows and bytes of their documents the project holds now."""
        jobs = await self.etcd.range(self.keys.jobs(project), count_only=True)
        flows = await self.etcd.range(self.keys.workflows(project), count_only=True)
        return {
            "jobs": jobs.count,
            "workflows": flows.count,
            "bytes": await self._doc_bytes(project, jobs.count + flows.count),
            "run_history_bytes": await self._history_bytes(project, jobs.count + flows.count),
        }

    async def _history_bytes(self, project: str, docs: int) -> int:
        """The sum of the project's run-history index (D210)."""
        return await self._indexed_total(self.keys.history_sizes(project), project, docs, True)

    def size_ops(self, project: str, kind: Kind, name: str, doc: str) -> list[Any]:
        """The index entries written with a job's or workflow's document (D162, D210)."""
        return [
            Op.put(self.keys.doc_size(project, kind, name), str(len(doc))),
            Op.put(self.keys.history_size(project, kind, name), str(history_bytes(kind, doc))),
        ]

    def size_deletes(self, project: str, kind: Kind, name: str) -> list[Any]:
        return [
            Op.delete(self.keys.doc_size(project, kind, name)),
            Op.delete(self.keys.history_size(project, kind, name)),
        ]

    async def _doc_bytes(self, project: str, docs: int) -> int:
        """The sum of the project's document-size index (D162)."""
        return await self._indexed_total(self.keys.doc_sizes(project), project, docs, False)

    async def _indexed_total(self, prefix: str, project: str, docs: int, history: bool) -> int:
        """The sum of one size index; documents written before it existed are measured once."""
        sizes = await self.etcd.range_all(prefix)
        if len(sizes.kvs) < docs:
            await self._record_sizes(project, {kv.key for kv in sizes.kvs}, history=history)
            sizes = await self.etcd.range_all(prefix)
        total = 0
        for kv in sizes.kvs:
            try:
                total += int(kv.value)
            except ValueError:
                continue
        return total

    async def _record_sizes(self, project: str, known: set[str], *, history: bool = False) -> None:
        kind: Kind
        for kind, prefix in (
            ("job", self.keys.jobs(project)),
            ("workflow", self.keys.workflows(project)),
        ):
            async for page in self.etcd.range_pages(prefix):
                for kv in page.kvs:
                    name = kv.key[len(prefix) :]
                    if history:
                        size_key = self.keys.history_size(project, kind, name)
                        value = history_bytes(kind, kv.value)
                    else:
                        size_key = self.keys.doc_size(project, kind, name)
                        value = len(kv.value)
                    if size_key in known:
                        continue
                    # only while the document is still this one (a concurrent write records its own)
                    await self.etcd.txn(
                        [Compare.modified(kv.key, kv.mod_revision)],
                        [Op.put(size_key, str(value))],
                    )

    async def check_quota(
        self,
        project: str,
        kind: Kind,
        *,
        creating: bool,
        old_size: int,
        new_size: int,
        old_history: int = 0,
        new_history: int = 0,
    ) -> None:
        """Raise ``QuotaExceeded`` when writing this document would exceed a quota. Checked
        before the write's transaction: concurrent creates may overshoot by their number."""
        growing = new_size > old_size
        history_grows = new_history > old_history
        if not creating and not growing and not history_grows:
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
        total_history = 0
        if history_grows:
            docs = (await self.etcd.range(self.keys.jobs(project), count_only=True)).count + (
                await self.etcd.range(self.keys.workflows(project), count_only=True)
            ).count
            total_history = await self._history_bytes(project, docs)
        over = exceeded(
            limits,
            kind,
            count=count,
            total_bytes=total,
            creating=creating,
            old_size=old_size,
            new_size=new_size,
            total_history=total_history,
            old_history=old_history,
            new_history=new_history,
        )
        if over is not None:
            raise refusal(over, limits, project)
