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
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from cluster.errors import CronmeshError, Unavailable
from cluster.etcd import Compare, Etcd, Op
from cluster.groups import NodeState
from cluster.ids import MAX_MACHINE_ID, Snowflake
from cluster.keys import Keys
from cluster.models import now_utc
from cluster.runas import DYNAMIC
from cluster.secret_store import SecretStore
from cluster.session import Session
from cluster.store import Store, dumps
from cluster.waiting import within, woken
from logstore.service import build_logs
from nodes import __version__, metrics
from nodes.api.access import Access
from nodes.api.app import start_api
from nodes.api.http import connected
from nodes.api.peer import PeerClient
from nodes.config import NodeConfig
from nodes.config_sources import etcd_security
from nodes.daemon import load
from nodes.daemon.shards import Campaigns
from nodes.executor import jobenv
from nodes.executor.containment import Containment
from nodes.executor.runas import RunUids, advertised, node_policy
from nodes.executor.workdir import secure_node_dirs
from nodes.leader.scheduler import Scheduler
from nodes.runtime import etcd_metrics
from nodes.runtime.secretkeys import KeyFile
from nodes.worker.attempt import STATES, states
from nodes.worker.capacity import held_at_once
from nodes.worker.cluster_view import ClusterView
from nodes.worker.worker import Worker

log = structlog.get_logger(__name__)


class MachineIdConflict(CronmeshError):
    """The machine id set in the config is held by another live node."""

    code = "machine_id_conflict"
    status = 409


class Node:
    def __init__(self, config: NodeConfig, *, clock: Callable[[], datetime] = now_utc) -> None:
        self.config = config
        self.clock = clock
        self.keys = Keys(config.prefix)
        self.etcd = Etcd(
            config.etcd,
            timeout=config.etcd_timeout,
            security=etcd_security(config),
            observer=etcd_metrics.observe,
            max_message=config.etcd_max_message,
            page_keys=config.etcd_page_keys,
        )
        # Which users runs run as (D142); the data folder private, the work folder traversable
        # (D143). Both before anything writes there.
        self.run_as = node_policy(config)
        # per-run uids (D205): only a root node with run_as_default dynamic switches to them
        self.run_uids = (
            RunUids(*config.run_uid_range)
            if self.run_as.is_root and self.run_as.default == DYNAMIC
            else None
        )
        secure_node_dirs(
            Path(config.data_dir),
            [Path(config.data_dir) / config.node_id, config.spool_path, config.logs_path],
            config.work_path,
        )
        self.logs = build_logs(config.log_settings())
        self.secret_keys = KeyFile(config.secrets_key_file)
        self.secrets: SecretStore | None = None
        # A cgroup per run and the fence process (D150-D152); started in run().
        self.containment = Containment(
            config.node_id,
            config.data_dir,
            use_cgroups=config.cgroups != "off",
            # every set in use at once: seated, armed, and ended ones in line (D464, D494)
            pool_size=held_at_once(config.capacity, config.max_armed),
        )
        self.access = Access(config, self.etcd, self.keys, self.node_id)
        self.access.connected = lambda: connected(self)
        self.peers = PeerClient(self.etcd, self.keys, self.access.sign)
        self.ready = False
        self.leading = False
        self.session: Session | None = None
        self.store: Store | None = None
        self.worker: Worker | None = None
        metrics.QUEUE_DEPTH.set_function(self._queue_depth)
        metrics.EXECUTIONS.source, metrics.EXECUTIONS.states = self._executions, STATES
        self.scheduler: Scheduler | None = None
        self.started_at = clock()
        self._stop = asyncio.Event()
        self.campaigns: Campaigns | None = None  # this session's candidacies (D300)
        self._stale_lease = 0
        self.view: ClusterView | None = None
        self.fatal: str | None = None  # why the node stopped on its own (exit code 2)
        self._disconnecting = False
        self._interrupted = False  # a second Ctrl-C: runs are stopped at once (D245)
        self._record: dict[str, Any] = {}

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def shards_led(self) -> list[int]:
        return sorted(self.campaigns.led) if self.campaigns is not None else []

    def shutdown(self) -> None:
        """Ask the node to stop gracefully; idempotent and safe from a signal handler."""
        if not self._stop.is_set():
            log.info("shutdown requested")
            self._stop.set()

    def on_signal(self) -> None:
        """SIGINT/SIGTERM: the first stops gracefully (drain up to ``drain_timeout``), a second
        stops the runs at once, recorded cancelled (D245). Safe from a signal handler."""
        if not self._stop.is_set():
            self.shutdown()
        else:
            self.interrupt()

    def interrupt(self) -> None:
        """Stop at once: every running process is killed and recorded ``cancelled`` (reason
        ``interrupted``); the node then finishes stopping."""
        self._interrupted = True
        self._stop.set()
        if self.worker is not None:
            self.worker.interrupt()

    def _queue_depth(self) -> float:
        return float(len(self.worker.candidates)) if self.worker is not None else 0.0

    def _executions(self) -> Mapping[str, int]:
        return states(self.worker.running.values()) if self.worker is not None else {}

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.shutdown()

    async def run(self) -> None:
        structlog.contextvars.bind_contextvars(node=self.node_id)
        self.containment.start()  # before any run: reaps what a previous incarnation left
        tending = asyncio.create_task(self.containment.tend(), name="containment")
        runner = await start_api(self)
        self.logs.start()
        log.info(
            "node started",
            listen=self.config.listen,
            etcd=",".join(self.config.etcd),
            prefix=self.config.prefix,
            version=__version__,
            # who jobs run as here (D142): the default, and the users a run_as may name
            jobs_run_as=self.run_as.default if self.run_as.is_root else self.run_as.own_user,
            run_as_users=advertised(self.run_as),
        )
        if self.run_as.is_root and self.run_as.allow_root:
            log.info("this node may run jobs as root (allow_root_jobs)")
        if self.config.security_level == 0:
            log.warning(
                "SECURITY LEVEL 0: node-to-node calls (/internal/v1, every project's logs) are "
                "not authenticated; allowed on a loopback address only, for development",
                listen=self.config.listen,
            )
        if self.config.secrets_key_file is None:
            log.warning(
                "no secrets key (--secrets-key-file): this node cannot set secrets, and runs "
                "that reference secrets fail on it"
            )
        try:
            await self._sessions()
        finally:
            tending.cancel()
            await asyncio.gather(tending, return_exceptions=True)
            await asyncio.to_thread(self.containment.close)
            await self.logs.stop(within=min(10.0, self.config.drain_timeout))
            await runner.cleanup()
            with contextlib.suppress(Exception):  # final counts of merged refusals (D168)
                await within(self.access.close(), 5)
            self.access.hashing.close()
            await self.peers.close()
            await self.etcd.close()
            log.info("node stopped")

    async def _sessions(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                await self.etcd.connect()
                await self.etcd.status()
                session = await Session.open(
                    self.etcd, self.config.lease_ttl, on_valid=self.containment.valid_until
                )
                if self._stale_lease:
                    # A lease we gave up on may still be alive (etcd extends leases when it
                    # restarts): revoke it so its claims and candidacy go now, not a TTL later.
                    with contextlib.suppress(Unavailable):
                        await self.etcd.revoke(self._stale_lease)
                    self._stale_lease = 0
            except Unavailable as exc:
                log.warning("etcd unavailable; retrying", error=str(exc), retry_in=delay)
                await self.etcd.close()  # the next connect resolves the endpoints afresh
                await woken(self._stop, delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            try:
                await self._serve(session)
            except MachineIdConflict as exc:
                log.error("cannot start", error=exc.message)
                self.fatal = exc.message
                self._stop.set()
            except Unavailable as exc:
                # etcd went away while we served (an outage, a lost reply): expected, and the
                # loop starts a new session; only other exceptions are logged as unexpected
                log.warning("session ended: etcd unavailable", error=str(exc))
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
        if self.config.machine_id is not None:
            return await self._claim_machine_id(session, self.config.machine_id)
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

    async def _claim_machine_id(self, session: Session, n: int) -> int:
        """The machine id set in the config: taken, or a clear error naming its holder. Our own
        previous incarnation may still hold it until its lease expires: wait for that."""
        key = self.keys.machine_id(n)
        loop = asyncio.get_running_loop()
        until = loop.time() + 3 * self.config.lease_ttl + 5
        while True:
            res = await self.etcd.txn(
                [Compare.absent(key)], [Op.put(key, self.node_id, session.lease_id)], [Op.get(key)]
            )
            if res.succeeded:
                return n
            held = res.range_kvs(0)
            holder = held[0].value.decode() if held else "?"
            if holder != self.node_id or loop.time() > until:
                raise MachineIdConflict(
                    f"machine id {n} (config machine_id) is already held by live node {holder!r}; "
                    "give each node its own id within 0..1023, or leave it unset to allocate one"
                )
            log.info("machine id still held by our previous lease; waiting", machine_id=n)
            await asyncio.sleep(0.5)

    def node_record(self, machine_id: int) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "address": self.config.advertise_address,
            "properties": self.config.properties,
            "capacity": self.config.capacity,
            "weight_budget": self.config.weight_budget,
            "owner": self.config.owner,
            "version": __version__,
            "machine_id": machine_id,
            "run_as": advertised(self.run_as),
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat(),
            "registered_at": self.clock().isoformat(),
        }

    async def _serve(self, session: Session) -> None:
        self.session = session
        machine_id = await self._allocate_machine_id(session)
        self.store = Store(self.etcd, self.keys, Snowflake(machine_id), self.clock)
        self.store.quotas = self.config.quotas
        await self.access.on_session(self.store)  # first admin, peer secret
        self.secrets = SecretStore(self.etcd, self.keys, self.clock, self.secret_keys.ring)
        self._record = self.node_record(machine_id)
        record = dumps(self._record)
        await self.etcd.txn(
            [],
            [
                Op.put(self.keys.node(self.node_id), record, session.lease_id),
                Op.put(self.keys.node_info(self.node_id), record),
            ],
        )
        self.view = ClusterView(self.etcd, self.keys, self.node_id)
        self.view.on_own_state = self._on_own_state
        self.worker = Worker(
            etcd=self.etcd,
            keys=self.keys,
            store=self.store,
            session=session,
            node_id=self.node_id,
            properties=self.config.properties,
            capacity=self.config.capacity,
            max_armed=self.config.max_armed,
            logs=self.logs,
            work_dir=str(self.config.work_path),
            clock=self.clock,
            view=self.view,
            weight_budget=self.config.weight_budget,
            handoff_delay=self.config.handoff_delay,
            job_env=jobenv.base_env(
                os.environ,
                extra=self.config.job_env,
                passthrough=self.config.job_env_passthrough,
            ),
            run_as=self.run_as,
            run_uids=self.run_uids,
            containment=self.containment,
            secrets=self.secrets,
        )
        self.ready = True
        log.info("registered", lease=f"{session.lease_id:x}", machine_id=machine_id)
        worker_task = asyncio.create_task(self.worker.run(), name="worker")
        campaign_task = asyncio.create_task(self._campaign(session), name="campaign")
        load_task = asyncio.create_task(  # the Machines page's CPU and memory (D257)
            load.publish(
                self.etcd, self.keys, self.node_id, session, self.containment.layout, self.clock
            ),
            name="load",
        )
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
            for task in (campaign_task, worker_task, stop_task, lost_task, load_task):
                task.cancel()
            await asyncio.gather(
                campaign_task, worker_task, stop_task, lost_task, load_task, return_exceptions=True
            )
            await self.worker.close()

    def _on_own_state(self, state: NodeState | None, revision: int) -> None:
        """An operator asked this node to disconnect: acknowledge, then stop gracefully."""
        if state is None or not state.disconnect or self._disconnecting:
            return
        self._disconnecting = True
        log.warning("remote shutdown requested", reason=state.reason)
        task = asyncio.get_running_loop().create_task(self._acknowledge_disconnect(state, revision))
        task.add_done_callback(lambda _: self.shutdown())

    async def _acknowledge_disconnect(self, state: NodeState, revision: int) -> None:
        key = self.keys.node_state(self.node_id)
        done = state.model_copy(update={"disconnect": False, "changed_at": self.clock()})
        with contextlib.suppress(CronmeshError):
            await self.etcd.txn(
                [Compare.modified(key, revision)], [Op.put(key, done.model_dump_json())]
            )

    async def _graceful(self, session: Session, campaign_task: asyncio.Task[None]) -> None:
        assert self.worker is not None
        self.ready = False  # load balancers stop sending requests while we drain
        self.worker.accepting = False
        if self.campaigns is not None:
            self.campaigns.stopping = True  # a K change racing this cancel must not keep it
        campaign_task.cancel()
        await asyncio.gather(campaign_task, return_exceptions=True)
        await self._resign()
        # Tell the other workers at once (one write), so runs that would prefer this node go
        # elsewhere without waiting for the hand-off delay while we drain.
        with contextlib.suppress(CronmeshError):
            stopping = dumps({**self._record, "stopping": True})
            await self.etcd.put(self.keys.node(self.node_id), stopping, lease=session.lease_id)
        # Drain, unless the lease goes first: then our runs belong to nobody and will be
        # retried elsewhere, so our processes must die at once (no two attempts at a time).
        if self._interrupted:
            self.worker.interrupt()
        drain = asyncio.create_task(self.worker.drain(self.config.drain_timeout))
        lost = asyncio.create_task(session.lost.wait())
        await asyncio.wait([drain, lost], return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():
            log.warning("lease lost while draining: killing the remaining runs")
            drain.cancel()
            await self.worker.close()
        lost.cancel()
        await asyncio.gather(drain, lost, return_exceptions=True)
        if not session.lost.is_set():
            # The last sign of life of a node that is down (`node list` shows it).
            info = {**self._record, "stopped_at": self.clock().isoformat()}
            with contextlib.suppress(CronmeshError):
                await self.etcd.put(self.keys.node_info(self.node_id), dumps(info))

    async def _resign(self) -> None:
        if self.campaigns is not None:  # else its task ended and resigned on the way out
            await self.campaigns.resign_all()
        self.leading = False
        metrics.LEADER.set(0)

    async def _campaign(self, session: Session) -> None:
        """Campaign for every scheduler shard and lead what this node wins (D300-D304)."""
        self.campaigns = Campaigns(self, session)
        try:
            await self.campaigns.run()
        finally:
            self.campaigns = None
