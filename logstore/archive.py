"""Run records archived next to the logs, as JSON lines, when they leave etcd.

One object per job and prune pass: ``<project>/<job>/runs/<first_id>-<last_id>.jsonl``, one run
record (the JSON etcd held) per line. The ids in the name are snowflakes, so a date range is
answered from the object names alone, reading only the objects that overlap it.
"""

from __future__ import annotations

import json
from typing import Any

from logstore.store import LogStore, archive_prefix


def archive_key(project: str, job: str, ids: list[str]) -> str:
    return f"{archive_prefix(project, job)}{min(ids)}-{max(ids)}.jsonl"


async def archive_runs(store: LogStore, project: str, job: str, records: dict[str, bytes]) -> str:
    """Write the records (run id -> JSON) as one object; returns its key."""
    key = archive_key(project, job, list(records))
    body = b"".join(records[i].rstrip(b"\n") + b"\n" for i in sorted(records))
    await store.put_bytes(key, body)
    return key


async def archived_runs(
    store: LogStore,
    project: str,
    job: str | None = None,
    *,
    since: str = "0",
    until: str = "9" * 19,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Archived run records with ``since <= id < until``, newest first, at most ``limit``."""
    keys = [k for k in await store.keys(archive_prefix(project, job)) if _is_archive(k)]
    spans = []
    for key in keys:
        first, _, last = key.rsplit("/", 1)[-1].removesuffix(".jsonl").partition("-")
        if last >= since and first < until:
            spans.append((last, key))
    out: list[dict[str, Any]] = []
    for _, key in sorted(spans, reverse=True):
        for line in reversed((await store.read(key)).splitlines()):
            rec = json.loads(line)
            if since <= rec["id"] < until:
                out.append(rec)
        if len(out) >= limit:
            break
    out.sort(key=lambda r: r["id"], reverse=True)
    return out[:limit]


async def archived_log(
    store: LogStore, project: str, job: str, run: str, attempt: int
) -> str | None:
    """The ``log`` an archived run's record gives for ``attempt`` (a pack member's place, D440)."""
    for rec in await archived_runs(store, project, job, since=run, until=run + "0", limit=1):
        for a in rec.get("attempts") or []:
            if rec.get("id") == run and isinstance(a, dict) and a.get("attempt") == attempt:
                log = a.get("log")
                return log if isinstance(log, str) else None
    return None


def _is_archive(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 4 and parts[2] == "runs" and parts[3].endswith(".jsonl")
