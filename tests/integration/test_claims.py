"""The worker's compares, each raced on purpose against a real etcd (issue 25).

Every test sets up its race directly instead of waiting for timing to produce it: three workers
with no hand-off delay in one process, a worker that claims with a queue entry another worker has
already taken, a worker whose claim is deleted while its process runs, a worker that picked a
slot another worker has just filled. Each names the compare it rests on; ``python -m
tests.mutations`` removes that compare and checks that the test fails.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from cluster.election import Election
from cluster.etcd import Etcd
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.models import JobSpec, Run
from cluster.session import Session
from cluster.store import Store
from logstore.service import build_logs
from nodes.config import NodeConfig
from nodes.devtools.embedded import EtcdProcess
from nodes.leader.scheduler import Scheduler
from nodes.worker.worker import Worker
from tests.conftest import LogWatch, NodeTeardownError, wait_for

P = "p"


def now() -> datetime:
    return datetime.now(UTC)


def ledger_command(ledger: Path, gate: bool = False) -> str:
    """Appends ``start run claim node`` (and ``end …`` after the node's gate file exists)."""
    fields = '"$CRONMESH_RUN_ID" "$CRONMESH_CLAIM_REVISION" "$CRONMESH_NODE"'
    start = f"echo start {fields} >> {ledger}"
    if not gate:
        return start
    wait = f'while [ ! -e "{ledger}.gate-$CRONMESH_NODE" ]; do sleep 0.02; done'
    return f"{start}; {wait}; echo end {fields} >> {ledger}"


def ledger(path: Path, phase: str = "start") -> list[tuple[str, int, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        p, run, rev, node = line.split()
        if p == phase:
            out.append((run, int(rev), node))
    return out


class Rig:
    """Workers in this process, each with its own etcd client, lease and log spool."""

    def __init__(self, endpoint: str, keys: Keys, tmp: Path) -> None:
        self.endpoint, self.keys, self.tmp = endpoint, keys, tmp
        self.clients: list[Etcd] = []
        self.sessions: list[Session] = []
        self.workers: list[Worker] = []
        self.loops: list[asyncio.Task[None]] = []

    async def client(self, endpoint: str | None = None) -> Etcd:
        etcd = Etcd([endpoint or self.endpoint])
        await etcd.connect()
        self.clients.append(etcd)
        return etcd

    async def worker(
        self,
        node_id: str,
        *,
        capacity: int = 64,
        run: bool = False,
        clock: Callable[[], datetime] = now,
    ) -> Worker:
        etcd = await self.client()
        session = await Session.open(etcd, 5)
        self.sessions.append(session)
        store = Store(etcd, self.keys, Snowflake(len(self.workers) + 10), now)
        cfg = NodeConfig(node_id=node_id, data_dir=str(self.tmp / node_id))
        w = Worker(
            etcd=etcd,
            keys=self.keys,
            store=store,
            session=session,
            node_id=node_id,
            properties={},
            capacity=capacity,
            logs=build_logs(cfg.log_settings()),
            work_dir=str(self.tmp / node_id / "work"),
            clock=clock,
            handoff_delay=0.0,
        )
        self.workers.append(w)
        if run:
            self.loops.append(asyncio.create_task(w.run()))
        return w

    async def close(self) -> None:
        for task in self.loops:
            task.cancel()
        await asyncio.gather(*self.loops, return_exceptions=True)
        for w in self.workers:
            await w.close()
        for s in self.sessions:
            await s.close()
        for c in self.clients:
            await c.close()


@pytest.fixture
async def rig(etcd_server: EtcdProcess, keys: Keys, tmp_path: Path) -> AsyncIterator[Rig]:
    """Workers of the test; a worker task that crashed (logged) fails the test at teardown."""
    watch = LogWatch([])
    config = structlog.get_config()
    structlog.configure(processors=[watch, *config["processors"]])
    r = Rig(etcd_server.endpoint, keys, tmp_path)
    try:
        yield r
        await r.close()
    finally:
        structlog.configure(processors=config["processors"])
    if watch.found:
        raise NodeTeardownError("unexpected exceptions logged:\n" + "\n".join(watch.found))


async def put_job(store: Store, **spec: Any) -> Any:
    job, _ = await store.put_job(P, JobSpec(**spec))
    return job


async def queued(etcd: Etcd, keys: Keys, run_id: str | None = None) -> tuple[str, Any, Run]:
    """The queue entry (of ``run_id``, or the only one) as a worker's watch would hold it."""

    async def find() -> Any:
        for kv in (await etcd.range(keys.queue())).kvs:
            run = Run.model_validate_json(kv.value)
            if run_id is None or run.id == run_id:
                return kv.key, kv, run
        return None

    return await wait_for(find, 10, what="a queue entry")


async def idle(w: Worker) -> bool:
    return not w.running and not w.claiming


# -- the claim's compare on the queue entry ---------------------------------------------------


async def test_a_claim_made_with_a_queue_entry_already_taken_is_refused(etcd, keys, rig, tmp_path):
    """``_claim`` compares the queue entry's mod revision: B holds the same entry A has just
    claimed (its watch has not caught up) and must not claim, let alone run, the run again."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(1), now)
    await put_job(store, name="j", command=ledger_command(book))
    a, b = await rig.worker("a"), await rig.worker("b")
    run = await store.trigger(P, "j", {})
    key, kv, parsed = await queued(etcd, keys)
    await a._claim(key, kv, parsed)
    await b._claim(key, kv, parsed)  # the stale view of the same entry
    assert not b.running
    await wait_for(lambda: idle(a), 10, what="a's run to finish")
    assert [(r, n) for r, _, n in ledger(book)] == [(run.id, "a")]
    done = await store.get_run(P, run.id)
    assert done.status == "succeeded" and [x.node for x in done.attempts] == ["a"]


async def test_three_workers_without_handoff_delay_run_each_of_40_runs_once(
    etcd, keys, rig, tmp_path
):
    """Three workers see the same 40 queue entries at once (two transactions create them) and
    all claim at once: every run executes exactly once."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(2), now)
    job = await put_job(store, name="j", command=ledger_command(book))
    nobody = await put_job(store, name="nobody", command="true", target={"selector": "zone=x"})
    workers = [await rig.worker(n, run=True) for n in ("a", "b", "c")]
    # their queue watches are up once each holds a run no worker matches, created after them
    marker = store.new_run(nobody, source="manual")
    await etcd.txn([], store.create_run_ops(marker))
    await wait_for(lambda: all(len(w.candidates) == 1 for w in workers), 10, what="watches")
    runs = [store.new_run(job, source="manual") for _ in range(40)]
    for half in (runs[:20], runs[20:]):  # etcd takes at most 128 operations per transaction
        await etcd.txn([], [op for r in half for op in store.create_run_ops(r)])
    await wait_for(lambda: len(ledger(book)) >= 40, 60, what="40 executions")

    async def all_finished() -> bool:
        res = await etcd.range(keys.actives(P, "j"), count_only=True)
        return res.count == 0 and all(not w.running for w in workers)

    await wait_for(all_finished, 60, what="every run finished")
    per_run = Counter(r for r, _, _ in ledger(book))
    assert set(per_run) == {r.id for r in runs}, per_run
    assert [r for r, n in per_run.items() if n > 1] == []


async def test_a_run_cancelled_while_its_claim_is_in_flight_never_starts(etcd, keys, rig, tmp_path):
    """The claim compares the run's control key absent: a cancel written while the claim was
    on its way (the leader replacing an active run, D40) wins, and the worker finishes the run
    as cancelled instead of starting it."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(7), now)
    await put_job(store, name="j", command=ledger_command(book))
    a = await rig.worker("a")
    run = await store.trigger(P, "j", {})
    key, kv, parsed = await queued(etcd, keys)
    await etcd.put(keys.control(run.id), '{"action": "cancel", "reason": "replaced"}')
    await a._claim(key, kv, parsed)
    await wait_for(lambda: idle(a), 10, what="the claim")
    # idle: an execution is registered in `running` before its process starts and leaves it
    # once the process has exited and the run is recorded, so a process that ran has written
    # its line by now (no sleep needed), and the record would hold its attempt
    assert ledger(book) == []
    done = await store.get_run(P, run.id)
    assert done.status == "cancelled" and done.attempts == []


async def test_a_claim_whose_reply_was_lost_is_read_back_and_run_once(
    etcd_server, etcd, keys, rig, tmp_path
):
    """The claim's reply is lost (the connection is cut after the request went out): the worker
    counts the unknown outcome (``cronmesh_outcome_unknown_total{where="claim"}``), never starts
    the run on a guess nor retries blindly; reading back (orphan adoption) or the queue decides,
    and the run executes once."""
    from nodes import metrics
    from tests.chaos.harness import TcpProxy

    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(8), now)
    await put_job(store, name="j", command=ledger_command(book))
    proxy = await TcpProxy("127.0.0.1", etcd_server.client_port).start()
    try:
        a = await rig.worker("a")
        a.etcd = a.batch.etcd = await rig.client(proxy.endpoint)  # its writes pass the proxy
        run = await store.trigger(P, "j", {})
        key, kv, parsed = await queued(etcd, keys)
        await a.etcd.get(key)  # the connection is up: the claim's request surely reaches etcd
        unknown = metrics.OUTCOME_UNKNOWN.labels("claim")
        before = unknown._value.get()
        proxy.armed = 1  # the next reply (the claim's) is thrown away and the connection cut
        await a._claim(key, kv, parsed)
        assert proxy.stats.replies_dropped == 1 and unknown._value.get() == before + 1
        assert not a.running  # not started on a guess
        # Either it applied (the claim is ours: adopted by reading back) or it did not (the
        # entry is still queued: claimed again through the queue). Never both, never neither.
        claim = await etcd.get(keys.claim(run.id))
        entry = await etcd.get(key)
        assert (claim is None) != (entry is None), (claim, entry)
        assert claim is None or claim.lease == a.session.lease_id
        rig.loops.append(asyncio.create_task(a.run()))
        await wait_for(lambda: len(ledger(book)) == 1, 15, what="the run, once")
        await wait_for(lambda: idle(a), 10, what="its completion")
        done = await store.get_run(P, run.id)
        assert done.status == "succeeded" and len(done.attempts) == 1
        assert [(r, n) for r, _, n in ledger(book)] == [(run.id, "a")]
    finally:
        await proxy.close()


# -- the claim's lease binding ------------------------------------------------------------------


async def test_the_claim_and_slot_vanish_with_the_workers_lease(etcd, keys, rig, tmp_path):
    """The claim and the slot key are written with the worker's lease: when it expires (here:
    revoked, as etcd does at expiry) the leader can see the run is no longer held."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(3), now)
    await put_job(store, name="j", command=ledger_command(book, gate=True), max_parallel=1)
    a = await rig.worker("a")
    run = await store.trigger(P, "j", {})
    key, kv, parsed = await queued(etcd, keys)
    await a._claim(key, kv, parsed)
    claim = await etcd.get(keys.claim(run.id))
    slots = (await etcd.range(keys.slots(P, "j"))).kvs
    assert claim is not None and claim.lease == a.session.lease_id
    assert [s.value.decode() for s in slots] == [run.id]
    await a.close()  # its processes die with the node
    await etcd.revoke(a.session.lease_id)
    assert await etcd.get(keys.claim(run.id)) is None
    assert (await etcd.range(keys.slots(P, "j"), count_only=True)).count == 0


# -- slot keys of limited jobs ------------------------------------------------------------------


async def test_two_workers_that_picked_the_same_free_slot_never_both_run(etcd, keys, rig, tmp_path):
    """``max_parallel: 1``: A and B both saw slot 0 free (B read the slots before A's claim
    committed); the claim compares the slot key absent, so only A runs."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(4), now)
    await put_job(store, name="j", command=ledger_command(book, gate=True), max_parallel=1)
    a, b = await rig.worker("a"), await rig.worker("b")
    r1 = await store.trigger(P, "j", {})
    r2 = await store.trigger(P, "j", {})
    k1, kv1, run1 = await queued(etcd, keys, r1.id)
    k2, kv2, run2 = await queued(etcd, keys, r2.id)
    stale = await b._free_slot(run2)
    assert stale == (True, keys.slot(P, "j", 0))

    async def stale_free_slot(run: Run) -> tuple[bool, str | None]:
        return stale

    b._free_slot = stale_free_slot  # type: ignore[method-assign]
    await a._claim(k1, kv1, run1)
    await b._claim(k2, kv2, run2)
    assert list(a.running) == [r1.id] and not b.running
    await wait_for(lambda: len(ledger(book)) >= 1, 10, what="a's process")
    # B's claim has returned without registering an execution (`not b.running` above): no
    # process of B can start any more, so the ledger is final for B without a sleep
    assert [(r, n) for r, _, n in ledger(book)] == [(r1.id, "a")]
    assert (await store.get_run(P, r2.id)).status == "pending"
    (tmp_path / "ledger.gate-a").touch()
    await wait_for(lambda: idle(a), 10, what="a's run to finish")


# -- the completion's compare on the claim -----------------------------------------------------


async def test_a_worker_whose_claim_was_taken_away_commits_nothing(etcd, keys, rig, tmp_path):
    """A runs attempt 1; its claim disappears (as when its lease expired), the leader records the
    attempt lost and B claims attempt 2. A's process then ends: its completion compares the
    claim's create revision, so it must neither finish the run nor erase the lost attempt nor
    delete B's claim. B's completion finishes the run."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(5), now)
    await put_job(
        store, name="j", command=ledger_command(book, gate=True), retries=1, retry_interval=0
    )
    a, b = await rig.worker("a"), await rig.worker("b")
    run = await store.trigger(P, "j", {})
    key, kv, parsed = await queued(etcd, keys)
    await a._claim(key, kv, parsed)
    await wait_for(lambda: len(ledger(book)) == 1, 10, what="attempt 1 started on a")
    a_rev = ledger(book)[0][1]

    # The claim goes (lease expiry), and the leader reaps the attempt: lost, queued again.
    await etcd.delete(keys.claim(run.id))
    session = await Session.open(etcd, 5)
    rig.sessions.append(session)
    lead = await Election(etcd, keys, session, "leader").campaign()
    sched = Scheduler(etcd, keys, store, lead, clock=now, node_id="leader")
    await sched.reaper.check_lost(run.id, P)
    reaped = await store.get_run(P, run.id)
    assert reaped.status == "pending" and [x.status for x in reaped.attempts] == ["lost"]

    key, kv, parsed = await queued(etcd, keys, run.id)
    await b._claim(key, kv, parsed)
    await wait_for(lambda: len(ledger(book)) == 2, 10, what="attempt 2 started on b")
    b_claim = await etcd.get(keys.claim(run.id))
    assert b_claim is not None

    (tmp_path / "ledger.gate-a").touch()  # the stale process ends and A tries to complete
    await wait_for(lambda: idle(a), 10, what="a's completion")
    now_run = await store.get_run(P, run.id)
    assert now_run.status == "running" and now_run.node == "b"
    assert [x.status for x in now_run.attempts] == ["lost"]
    still = await etcd.get(keys.claim(run.id))
    assert still is not None and still.create_revision == b_claim.create_revision

    (tmp_path / "ledger.gate-b").touch()
    await wait_for(lambda: idle(b), 10, what="b's completion")
    final = await store.get_run(P, run.id)
    assert final.status == "succeeded"
    assert [(x.status, x.node) for x in final.attempts] == [("lost", "a"), ("succeeded", "b")]
    assert final.attempts[1].claim_revision != a_rev


async def test_completion_after_the_claim_is_gone_leaves_the_record_alone(
    etcd, keys, rig, tmp_path
):
    """The narrowest form: the claim is deleted while the process runs and nobody else acts;
    the completion finds no claim of its create revision and writes nothing."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(6), now)
    await put_job(store, name="j", command=ledger_command(book, gate=True))
    a = await rig.worker("a")
    run = await store.trigger(P, "j", {})
    key, kv, parsed = await queued(etcd, keys)
    await a._claim(key, kv, parsed)
    await wait_for(lambda: len(ledger(book)) == 1, 10, what="the process")
    before = await etcd.get(keys.run(P, run.id))
    await etcd.delete(keys.claim(run.id))
    (tmp_path / "ledger.gate-a").touch()
    await wait_for(lambda: idle(a), 10, what="a's completion")
    after = await etcd.get(keys.run(P, run.id))
    assert after is not None and before is not None
    assert after.mod_revision == before.mod_revision
    assert await etcd.get(keys.active(P, "j", run.id)) is not None


# -- a claim in flight when the node is told to stop at once (D245, D280) -----------------------


async def test_a_claim_that_lands_after_a_second_ctrl_c_never_starts(etcd, keys, rig, tmp_path):
    """A second Ctrl-C ends the drain's wait for claims in flight; a claim that succeeds after
    it must not start its process (it used to run normally, up to the drain's last 30 s, and then
    be killed without a record): the run is handed on unstarted, ``lost``, as a run claimed ahead
    is when its node stops before its instant."""
    book = tmp_path / "ledger"
    store = Store(etcd, keys, Snowflake(7), now)
    await put_job(store, name="j", command=ledger_command(book))
    a = await rig.worker("a")
    run = await store.trigger(P, "j", {})
    key, kv, parsed = await queued(etcd, keys)
    gate = asyncio.Event()
    txn = a.batch.txn

    in_flight = asyncio.Event()

    async def held_txn(*args: Any, **kwargs: Any) -> Any:
        in_flight.set()
        await gate.wait()  # the claim is on its way while the node is interrupted
        return await txn(*args, **kwargs)

    a.batch.txn = held_txn  # type: ignore[method-assign]
    a.claiming.add(key)  # as the watch loop does before it spawns the claim
    claim = asyncio.create_task(a._claim(key, kv, parsed))
    await asyncio.wait_for(in_flight.wait(), 10)  # the claim's transaction is on its way
    drain = asyncio.create_task(a.drain(60))
    await wait_for(lambda: not a.accepting, 10, what="the drain to begin")
    a.interrupt()
    gate.set()
    await asyncio.wait_for(asyncio.gather(claim, drain), 20)
    await wait_for(lambda: idle(a), 20, what="the claimed run to be handed on")
    done = await store.get_run(P, run.id)
    assert ledger(book) == [], "the job's command ran after the interrupt"
    assert done.status == "lost", done
    assert "before it started" in (done.error or ""), done
    assert await etcd.get(keys.claim(run.id)) is None
