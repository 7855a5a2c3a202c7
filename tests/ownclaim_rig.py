"""An in-process node for the leader's own claims (D444): its leader (``Scheduler``) and its
worker share one etcd client and one lease; the worker follows its view, its budgets and the
control requests, without a dispatch loop (what runs was claimed by its leader, or adopted by the
orphan check when asked for). Used by tests/integration/test_own_claims.py and
tests/security/test_own_claim_grants.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cluster.election import Election
from cluster.etcd import Etcd
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import JobSpec, Run
from cluster.session import Session
from cluster.store import Store, dumps
from logstore.service import build_logs
from nodes.config import NodeConfig
from nodes.devtools.embedded import EtcdProcess
from nodes.leader.scheduler import Scheduler
from nodes.worker.cluster_view import ClusterView
from nodes.worker.ownclaims import OwnClaims
from nodes.worker.worker import Worker
from tests.conftest import wait_for

P = "p"
ORPHANS_EVERY = 3600.0  # the worker's periodic orphan check, out of every test's reach


def now() -> datetime:
    return datetime.now(UTC)


class Node:
    """A node's leader and worker in this process: one etcd client, one lease."""

    def __init__(self, etcd: Etcd, keys: Keys, session: Session, worker: Worker) -> None:
        self.etcd, self.keys, self.session, self.worker = etcd, keys, session, worker
        self.store = worker.store
        self.sched: Scheduler | None = None
        self.tasks: list[asyncio.Task[Any]] = []

    async def lead(self, node_id: str, ahead: float = 1.5) -> Scheduler:
        lead = await Election(self.etcd, self.keys, self.session, "leader").campaign()
        own = OwnClaims(self.worker)
        own.lead = max(own.lead, ahead)  # a test's ticks further ahead are claimed too (D449)
        self.sched = Scheduler(
            self.etcd, self.keys, self.store, lead, clock=now, node_id=node_id, ahead=ahead, own=own
        )
        await self.sched._load()
        return self.sched


class Rig:
    def __init__(self, endpoint: str, keys: Keys, tmp: Path) -> None:
        self.endpoint, self.keys, self.tmp = endpoint, keys, tmp
        self.nodes: list[Node] = []
        self.clients: list[Etcd] = []

    async def node(
        self, node_id: str, *, capacity: int = 16, max_armed: int = 512, orphans: bool = False
    ) -> Node:
        etcd = Etcd([self.endpoint])
        await etcd.connect()
        self.clients.append(etcd)
        session = await Session.open(etcd, 5)
        keys = self.keys
        record = {"id": node_id, "capacity": capacity}
        await etcd.put(keys.node(node_id), dumps(record), lease=session.lease_id)
        store = Store(etcd, keys, Snowflake(len(self.nodes) + 20), now)
        cfg = NodeConfig(node_id=node_id, data_dir=str(self.tmp / node_id))
        view = ClusterView(etcd, keys, node_id)
        w = Worker(
            etcd=etcd,
            keys=keys,
            store=store,
            session=session,
            node_id=node_id,
            properties={},
            capacity=capacity,
            max_armed=max_armed,
            logs=build_logs(cfg.log_settings()),
            work_dir=str(self.tmp / node_id / "work"),
            clock=now,
            view=view,
        )
        # only a wake (an unknown outcome) adopts within a test: never the periodic pass
        w.orphan_every = ORPHANS_EVERY
        node = Node(etcd, keys, session, w)
        # the view, the budgets and the control requests; no dispatch loop: what runs here was
        # claimed by its leader (or adopted by the orphan check, when asked for)
        loops = [view.run(), w.budgets.run()]
        loops.append(w._follow(keys.controls(), w._on_control, reset=w._controls.clear))
        if orphans:
            loops.append(w._adopt_orphans())
        node.tasks = [asyncio.create_task(c) for c in loops]
        await wait_for(lambda: view.ready and w.budgets.ready, 10, what="the view loaded")
        await wait_for(lambda: node_id in view.records, 10, what="the node in its view")
        self.nodes.append(node)
        return node

    async def close(self) -> None:
        for n in self.nodes:  # what still waits for its instant ends as a run ends, not killed
            for ex in list(n.worker.running.values()):
                ex.request("abort")
        for n in self.nodes:
            w = n.worker
            with contextlib.suppress(AssertionError):
                await wait_for(lambda w=w: not w.running, 10, what="the runs ended")  # type: ignore[misc]
        for n in self.nodes:
            for t in n.tasks:
                t.cancel()
            await asyncio.gather(*n.tasks, return_exceptions=True)
            await n.worker.close()
            await n.session.close()
        for c in self.clients:
            await c.close()


@pytest.fixture
async def rig(etcd_server: EtcdProcess, keys: Keys, tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(etcd_server.endpoint, keys, tmp_path)
    yield r
    await r.close()


async def job(store: Store, name: str, command: str = "true", cron: str = "* * * * * *") -> None:
    await store.put_job(P, JobSpec(name=name, command=command, schedules=[{"cron": cron}]))


async def runs_of(etcd: Etcd, keys: Keys, name: str) -> list[Run]:
    res = await etcd.range(keys.runs(P))
    found = [Run.model_validate_json(kv.value) for kv in res.kvs]
    return sorted((r for r in found if r.job == name), key=lambda r: r.scheduled_at or now())


async def queued_ids(etcd: Etcd, keys: Keys) -> set[str]:
    res = await etcd.range(keys.queue(), keys_only=True)
    return {kv.key.rsplit("/", 1)[-1] for kv in res.kvs}


async def early_in_a_second(margin: float = 0.35) -> None:
    """At the start of a second: the ticks the leader plans then are ahead of it by more than
    ``1 - margin`` s (time to act on them before their instant)."""
    await wait_for(lambda: time.time() % 1 < margin, 5, interval=0.01, what="a fresh second")


def reserved_nothing(w: Worker) -> Callable[[], bool]:
    return lambda: not w.claiming and not w._claiming_runs and not w._claim_cost


AHEAD = 5.0  # a test's leader writes the ticks of the next 5 s, and claims them (D449)


async def a_tick_four_seconds_away() -> None:
    """Early in a 5-second step: a ``*/5`` job made now has its first tick more than 4 s away
    (room to act on it before its instant, on a loaded machine too)."""
    await wait_for(lambda: 0.05 < time.time() % 5 < 0.9, 7, interval=0.01, what="a tick ~4 s off")
