"""The leader forgets nodes that have been down longer than ``node_retention`` (D255).

Each sweep reads the node records and the live nodes at one revision, decides in
``cluster.noderetention``, and writes each change as a transaction that compares the record's
mod revision and the node's absence: a node that comes back (it rewrites its record) or an
operator's ``nodes forget`` in between makes the write a no-op, never a wrong delete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import structlog

from cluster.etcd import Compare, Etcd, Op
from cluster.keys import Keys
from cluster.noderetention import held, sweep, sweep_every
from nodes.leader.loops import periodic

log = structlog.get_logger(__name__)

MAX_NODES = 10_000  # records read per sweep (a cluster is far smaller; the read stays bounded)


class NodeRetention:
    def __init__(
        self, etcd: Etcd, keys: Keys, clock: Callable[[], datetime], retention: float
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.clock = clock
        self.retention = retention

    async def run(self) -> None:
        if self.retention <= 0:
            return  # kept forever
        await periodic(sweep_every(self.retention), self.sweep)

    async def sweep(self) -> None:
        infos = await self.etcd.range(self.keys.node_infos(), limit=MAX_NODES)
        live = await self.etcd.range(
            self.keys.nodes(), revision=infos.revision, keys_only=True, limit=MAX_NODES
        )
        records, revs = {}, {}
        for kv in infos.kvs:
            node = kv.key.rsplit("/", 1)[-1]
            try:
                records[node] = json.loads(kv.value)
            except ValueError:
                records[node] = {}
            revs[node] = kv.mod_revision
        up = {kv.key.rsplit("/", 1)[-1] for kv in live.kvs}
        states = await self.etcd.range(
            self.keys.node_states(), revision=infos.revision, limit=MAX_NODES
        )
        kept, state_revs = set(), {}
        for kv in states.kvs:
            node = kv.key.rsplit("/", 1)[-1]
            state_revs[node] = kv.mod_revision
            try:
                state = json.loads(kv.value)
            except ValueError:
                state = None
            if not isinstance(state, dict) or held(state):
                kept.add(node)  # disabled or drained by an operator: never forgotten (D281)
        now = self.clock()
        plan = sweep(records, up, now, self.retention, kept)
        for node in plan.mark:
            record = {**records[node], "down_since": now.isoformat()}
            await self._write(
                node, revs[node], [Op.put(self.keys.node_info(node), json.dumps(record))]
            )
        for node in plan.forget:
            # the admin state as read: an operator's disable in between makes this a no-op
            state_key = self.keys.node_state(node)
            rev = state_revs.get(node)
            done = await self._write(
                node,
                revs[node],
                [Op.delete(self.keys.node_info(node)), Op.delete(state_key)],
                [Compare.modified(state_key, rev) if rev else Compare.absent(state_key)],
            )
            if done:
                log.info("forgot a node down longer than node_retention", node_id=node)

    async def _write(
        self, node: str, rev: int, ops: list[object], also: list[object] | None = None
    ) -> bool:
        info = self.keys.node_info(node)
        res = await self.etcd.txn(
            [Compare.modified(info, rev), Compare.absent(self.keys.node(node)), *(also or [])], ops
        )
        return bool(res.succeeded)
