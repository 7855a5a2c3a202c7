"""One node's lifecycle: API server, etcd session, registration, worker, scheduler candidacy.

``Node.run()`` keeps the HTTP API up the whole time and loops over *sessions*: connect to etcd
(with backoff while it is unreachable), open a lease, register, run the worker and campaign for the
scheduler. When the lease is lost the node kills its processes, writes nothing more, and starts a
new session. ``shutdown()`` (SIGTERM) resigns leadership at once, stops claiming, drains running
processes up to ``drain_timeout``, revokes the lease and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from cluster.election import Election
from cluster.errors import CronmeshError, Unavailable
from cluster.etcd import Compare, Etcd, Op
from cluster.ids import MAX_MACHINE_ID, Snowflake
from cluster.keys import Keys
from cluster.models import now_utc
from cluster.session import Session
from cluster.store import Store, dumps
from logstore.service import build_logs
from nodes import __version__, metrics
from nodes.config import NodeConfig
from nodes.peer import PeerClient
from nodes.scheduler import Scheduler
from nodes.worker import Worker

log = structlog.get_logger(__name__)


class Node:
    def __init__(self, config: NodeConfig, *, clock: Callable[[], datetime] = now_utc) -> None:
        self.config = config
        self.clock = clock
        self.keys = Keys(config.prefix)
        self.etcd = Etcd(config.etcd, timeout=config.etcd_timeout)
        self.logs = build_logs(config)
        self.peers = PeerClient(self)
        self.ready = False
        self.leading = False
        self.session: Session | None = None
        self.store: Store | None = None
        self.worker: Worker | None = None
        self.scheduler: Scheduler | None = None
        self.started_at = clock()
        self._stop = asyncio.Event()
        self._election: Election | None = None
        self._stale_lease = 0

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def shutdown(self) -> None:
        """Ask the node to stop gracefully; idempotent and safe from a signal handler."""
        if not self._stop.is_set():
            log.info("shutdown requested")
            self._stop.set()

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.shutdown()

    async def run(self) -> None:
        from nodes.api import start_api

        structlog.contextvars.bind_contextvars(node=self.node_id)
        runner = await start_api(self)
        self.logs.start()
        log.info(
            "node started",
            listen=self.config.listen,
            etcd=",".join(self.config.etcd),
            prefix=self.config.prefix,
            version=__version__,
        )
        try:
            await self._sessions()
        finally:
            await self.logs.stop(within=min(10.0, self.config.drain_timeout))
            await runner.cleanup()
            await self.peers.close()
            await self.etcd.close()
            log.info("node stopped")

    async def _sessions(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                await self.etcd.connect()
                await self.etcd.status()
                session = await Session.open(self.etcd, self.config.lease_ttl)
                if self._stale_lease:
                    # A lease we gave up on may still be alive (etcd extends leases when it
                    # restarts): revoke it so its claims and candidacy go now, not a TTL later.
                    with contextlib.suppress(Unavailable):
                        await self.etcd.revoke(self._stale_lease)
                    self._stale_lease = 0
            except Unavailable as exc:
                log.warning("etcd unavailable; retrying", error=str(exc), retry_in=delay)
                await self.etcd.close()  # the next connect resolves the endpoints afresh
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            try:
                await self._serve(session)
            except Exception as exc:
                log.exception("session failed", error=str(exc))
            finally:
                self.ready = False
                self.leading = False
                metrics.LEADER.set(0)
                if session.lost.is_set():
                    self._stale_lease = session.lease_id
                await session.close()

    async def _allocate_machine_id(self, session: Session) -> int:
        start = zlib.crc32(self.node_id.encode()) % (MAX_MACHINE_ID + 1)
        for i in range(MAX_MACHINE_ID + 1):
            n = (start + i) % (MAX_MACHINE_ID + 1)
            key = self.keys.machine_id(n)
            res = await self.etcd.txn(
                [Compare.absent(key)], [Op.put(key, self.node_id, session.lease_id)]
            )
            if res.succeeded:
                return n
        raise Unavailable("no free machine id: 1024 nodes are registered")

    def node_record(self, machine_id: int) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "address": self.config.advertise_address,
            "properties": self.config.properties,
            "capacity": self.config.capacity,
            "version": __version__,
            "machine_id": machine_id,
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat(),
            "registered_at": self.clock().isoformat(),
        }

    async def _serve(self, session: Session) -> None:
        self.session = session
        machine_id = await self._allocate_machine_id(session)
        self.store = Store(self.etcd, self.keys, Snowflake(machine_id), self.clock)
        record = dumps(self.node_record(machine_id))
        await self.etcd.txn(
            [],
            [
                Op.put(self.keys.node(self.node_id), record, session.lease_id),
                Op.put(self.keys.node_info(self.node_id), record),
            ],
        )
        self.worker = Worker(
            etcd=self.etcd,
            keys=self.keys,
            store=self.store,
            session=session,
            node_id=self.node_id,
            properties=self.config.properties,
            capacity=self.config.capacity,
            logs=self.logs,
            work_dir=str(self.config.work_path),
            clock=self.clock,
        )
        self.ready = True
        log.info("registered", lease=f"{session.lease_id:x}", machine_id=machine_id)
        worker_task = asyncio.create_task(self.worker.run(), name="worker")
        campaign_task = asyncio.create_task(self._campaign(session), name="campaign")
        stop_task = asyncio.create_task(self._stop.wait())
        lost_task = asyncio.create_task(session.lost.wait())
        try:
            await asyncio.wait(
                [stop_task, lost_task, worker_task], return_when=asyncio.FIRST_COMPLETED
            )
            if worker_task.done() and not worker_task.cancelled():
                log.error("worker stopped", error=repr(worker_task.exception()))
            if self._stop.is_set() and not session.lost.is_set():
                await self._graceful(session, campaign_task)
            else:
                log.warning("lease lost: stopping every process of this node")
        finally:
            self.ready = False
            for task in (campaign_task, worker_task, stop_task, lost_task):
                task.cancel()
            await asyncio.gather(
                campaign_task, worker_task, stop_task, lost_task, return_exceptions=True
            )
            await self.worker.close()

    async def _graceful(self, session: Session, campaign_task: asyncio.Task[None]) -> None:
        assert self.worker is not None
        self.ready = False  # load balancers stop sending requests while we drain
        self.worker.accepting = False
        campaign_task.cancel()
        await asyncio.gather(campaign_task, return_exceptions=True)
        await self._resign()
        # Drain, unless the lease goes first: then our runs belong to nobody and will be
        # retried elsewhere, so our processes must die at once (no two attempts at a time).
        drain = asyncio.create_task(self.worker.drain(self.config.drain_timeout))
        lost = asyncio.create_task(session.lost.wait())
        await asyncio.wait([drain, lost], return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():
            log.warning("lease lost while draining: killing the remaining runs")
            drain.cancel()
            await self.worker.close()
        lost.cancel()
        await asyncio.gather(drain, lost, return_exceptions=True)

    async def _resign(self) -> None:
        election, self._election = self._election, None
        if election is not None:
            try:
                await election.resign()
                log.info("resigned leadership")
            except Unavailable as exc:
                log.warning("resign failed; the lease will expire", error=str(exc))
        self.leading = False
        metrics.LEADER.set(0)

    async def _campaign(self, session: Session) -> None:
        delay = 0.2
        while not session.lost.is_set():
            election = Election(self.etcd, self.keys, session, self.node_id)
            self._election = election
            try:
                leadership = await election.campaign()
                self.leading = True
                metrics.LEADER.set(1)
                metrics.LEADER_CHANGES.inc()
                log.info("became leader", revision=leadership.revision)
                assert self.store is not None
                self.scheduler = Scheduler(
                    self.etcd,
                    self.keys,
                    self.store,
                    leadership,
                    clock=self.clock,
                    node_id=self.node_id,
                    archive=self.logs.archive,
                )
                await self.scheduler.run()
            except asyncio.CancelledError:
                raise
            except (CronmeshError, Exception) as exc:  # includes ExceptionGroup from the loop
                log.warning("scheduler stopped; campaigning again", error=repr(exc))
                self.leading = False
                metrics.LEADER.set(0)
                with contextlib.suppress(Exception):
                    await self._resign()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self.scheduler = None
                self.leading = False
