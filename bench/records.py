"""Run records read straight from etcd by a benchmark: every key under a prefix in pages, the runs
of a project as :class:`RunDoc` (the fields a benchmark measures), and key counts; each read
retried (the benchmark's idle client can be sent a GOAWAY by etcd)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cluster.errors import Unavailable
from cluster.etcd import KV, Etcd, Range, prefix_end


@dataclass(frozen=True, slots=True)
class RunDoc:
    id: str
    job: str
    status: str
    source: str
    scheduled_at: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None


def _ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def run_doc(raw: bytes) -> RunDoc:
    d = json.loads(raw)
    return RunDoc(
        id=d["id"],
        job=d["job"],
        status=d["status"],
        source=d["source"],
        scheduled_at=_ts(d.get("scheduled_at")),
        created_at=_ts(d["created_at"]) or 0.0,
        started_at=_ts(d.get("started_at")),
        finished_at=_ts(d.get("finished_at")),
    )


async def _range(etcd: Etcd, key: str, **kw: Any) -> Range:
    """A read of the benchmark itself, retried: its idle client can be sent a GOAWAY by etcd."""
    for attempt in range(5):
        try:
            return await etcd.range(key, **kw)
        except Unavailable:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


async def scan(etcd: Etcd, prefix: str, *, page: int = 2000, keys_only: bool = False) -> list[KV]:
    """Every key under ``prefix``, read in pages."""
    end = prefix_end(prefix).decode()
    key = prefix
    out: list[KV] = []
    while True:
        res = await _range(etcd, key, end=end, limit=page, keys_only=keys_only)
        out.extend(res.kvs)
        if not res.more or not res.kvs:
            return out
        key = res.kvs[-1].key + "\0"


async def read_runs(etcd: Etcd, prefix: str, project: str) -> list[RunDoc]:
    return [run_doc(kv.value) for kv in await scan(etcd, f"{prefix}/runs/{project}/")]


async def count(etcd: Etcd, prefix: str) -> int:
    res = await _range(etcd, prefix, count_only=True)
    return res.count
