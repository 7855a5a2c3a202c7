"""A decoded view of cronmesh's state read straight from etcd (``cronmesh inspect``): which
nodes are up, who leads, what is queued, who holds which run, what a job looks like. It needs
only etcd, so it works when every node is down; docs/etcd-layout.md gives the etcdctl recipes
that answer the same questions."""

from __future__ import annotations

import json
from typing import Any

from cluster.etcd import Etcd
from cluster.keys import ELECTION_SCHEDULER, Keys


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


async def nodes(etcd: Etcd, keys: Keys) -> list[dict[str, Any]]:
    infos = await etcd.range_all(keys.node_infos())
    live = await etcd.range_all(keys.nodes(), revision=infos.revision)
    up = {kv.key.rsplit("/", 1)[-1]: kv for kv in live.kvs}
    out = []
    for kv in infos.kvs:
        rec = _json(kv.value)
        node_id = kv.key.rsplit("/", 1)[-1]
        lease = up[node_id].lease if node_id in up else None
        out.append(
            {
                "id": node_id,
                "up": node_id in up,
                "lease": f"{lease:x}" if lease else None,
                "address": rec.get("address"),
                "version": rec.get("version"),
                "capacity": rec.get("capacity"),
                "properties": rec.get("properties", {}),
                "registered_at": rec.get("registered_at"),
            }
        )
    return out


async def election(etcd: Etcd, keys: Keys) -> dict[str, Any]:
    res = await etcd.range(keys.election(ELECTION_SCHEDULER), sort="create")
    candidates = [
        {
            "node": kv.value.decode(),
            "lease": kv.key.rsplit("/", 1)[-1],
            "create_revision": kv.create_revision,
        }
        for kv in res.kvs
    ]
    return {
        "leader": candidates[0]["node"] if candidates else None,
        "fencing_revision": candidates[0]["create_revision"] if candidates else None,
        "candidates": candidates,
    }


async def queue(etcd: Etcd, keys: Keys, limit: int = 100) -> dict[str, Any]:
    count = (await etcd.range(keys.queue(), count_only=True)).count
    res = await etcd.range(keys.queue(), limit=limit)
    entries = []
    for kv in res.kvs:
        segs = keys.tail(kv.key, keys.queue())
        run = _json(kv.value)
        entries.append(
            {
                "run": segs[-1],
                "priority": 1000 - int(segs[0]),
                "project": run.get("project"),
                "job": run.get("job"),
                "attempt": run.get("attempt"),
                "source": run.get("source"),
                "not_before": run.get("not_before"),
                "created_at": run.get("created_at"),
            }
        )
    return {"depth": count, "entries": entries}


async def claims(etcd: Etcd, keys: Keys) -> list[dict[str, Any]]:
    res = await etcd.range_all(keys.claims())
    out = []
    for kv in res.kvs:
        rec = _json(kv.value)
        out.append(
            {
                "run": kv.key.rsplit("/", 1)[-1],
                **(rec if isinstance(rec, dict) else {"value": rec}),
                "claim_revision": kv.create_revision,
                "lease": f"{kv.lease:x}",
            }
        )
    return out


async def job(etcd: Etcd, keys: Keys, project: str, name: str) -> dict[str, Any] | None:
    kv = await etcd.get(keys.job(project, name))
    if kv is None:
        return None
    state = await etcd.get(keys.schedule_state(project, name))
    active = await etcd.range_all(keys.actives(project, name), keys_only=True)
    recent = await etcd.range(keys.job_runs(project, name), limit=10, descending=True)
    return {
        "job": _json(kv.value),
        "mod_revision": kv.mod_revision,
        "schedule_state": _json(state.value) if state else None,
        "active_runs": [k.key.rsplit("/", 1)[-1] for k in active.kvs],
        "recent_runs": [
            {"run": k.key.rsplit("/", 1)[-1], "status": k.value.decode()} for k in recent.kvs
        ],
    }


async def overview(etcd: Etcd, keys: Keys) -> dict[str, Any]:
    status = await etcd.status()
    return {
        "prefix": keys.prefix,
        "etcd": status,
        "election": await election(etcd, keys),
        "nodes": await nodes(etcd, keys),
        "queue": await queue(etcd, keys, limit=20),
        "claims": await claims(etcd, keys),
    }
