"""Leases, elections, fencing and claims against a real etcd."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from cluster.election import Election, current_leader
from cluster.errors import LostOwnership
from cluster.etcd import Etcd
from cluster.ids import Snowflake
from cluster.models import JobSpec
from cluster.session import Session
from cluster.store import Store
from nodes.leader.scheduler import Scheduler
from tests.conftest import wait_for


async def test_session_reports_loss_when_lease_is_revoked(etcd, keys):
    session = await Session.open(etcd, 3)
    await etcd.put(keys.node("a"), "x", lease=session.lease_id)
    await etcd.revoke(session.lease_id)
    await asyncio.wait_for(session.lost.wait(), 5)
    assert await etcd.get(keys.node("a")) is None
    await session.close()


async def test_session_keeps_lease_alive_past_its_ttl(etcd, keys):
    session = await Session.open(etcd, 2)
    await etcd.put(keys.node("a"), "x", lease=session.lease_id)
    loop = asyncio.get_running_loop()
    end = loop.time() + 4.5
    while loop.time() < end:  # more than two TTLs
        assert not session.lost.is_set()
        await asyncio.sleep(0.25)
    assert await etcd.get(keys.node("a")) is not None
    await session.close()
    assert await etcd.get(keys.node("a")) is None


async def test_a_busy_event_loop_keeps_its_lease_a_wedged_one_loses_it(etcd, keys):
    """D109: the refreshes run in their own thread, so a loop blocked for most of a TTL (a
    burst of work) keeps the lease; a loop blocked for longer than a TTL (wedged) loses it."""
    session = await Session.open(etcd, 3)
    await etcd.put(keys.node("a"), "x", lease=session.lease_id)
    for _ in range(3):  # 3 times 2.2 s of a blocked loop, more than two TTLs in all
        time.sleep(2.2)  # the point: nothing on this loop runs meanwhile
        await asyncio.sleep(0.3)
    assert not session.lost.is_set()
    ttl, _ = await etcd.time_to_live(session.lease_id)
    assert ttl > 0 and await etcd.get(keys.node("a")) is not None
    # wedged: refreshes stop once the loop is silent for a TTL, and the lease runs out a TTL
    # (less the margin) after the last one
    time.sleep(7.0)
    await asyncio.wait_for(session.lost.wait(), 5)

    async def gone() -> bool:
        return await etcd.get(keys.node("a")) is None

    await wait_for(gone, 5, what="the lease's key to go")
    await session.close()


async def test_election_order_and_resign_hand_off(etcd, keys):
    s1, s2 = await Session.open(etcd, 5), await Session.open(etcd, 5)
    e1, e2 = Election(etcd, keys, s1, "n1"), Election(etcd, keys, s2, "n2")
    lead1 = await asyncio.wait_for(e1.campaign(), 5)
    second = asyncio.create_task(e2.campaign())
    await asyncio.sleep(0.3)
    assert not second.done()
    assert await current_leader(etcd, keys) == "n1"
    await e1.resign()
    lead2 = await asyncio.wait_for(second, 10)  # at once; 10: a loaded machine
    assert lead2.revision > lead1.revision
    assert await current_leader(etcd, keys) == "n2"
    await s1.close()
    await s2.close()


async def test_election_takes_over_when_leader_lease_expires(etcd, keys):
    s1, s2 = await Session.open(etcd, 2), await Session.open(etcd, 2)
    await Election(etcd, keys, s1, "n1").campaign()
    second = asyncio.create_task(Election(etcd, keys, s2, "n2").campaign())
    await s1.close()  # revoke: as if the lease had expired
    await asyncio.wait_for(second, 10)
    assert await current_leader(etcd, keys) == "n2"
    await s2.close()


async def test_deposed_leader_cannot_create_runs(etcd, keys):
    """Fencing: the leader's lease is revoked while it still believes it leads."""
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store(etcd, keys, Snowflake(1), lambda: clock[0])
    job, _ = await store.put_job(
        "p", JobSpec(name="j", command="true", schedules=[{"cron": "* * * * * *"}])
    )
    session = await Session.open(etcd, 5)
    leadership = await Election(etcd, keys, session, "n1").campaign()
    sched = Scheduler(etcd, keys, store, leadership, clock=lambda: clock[0], node_id="n1")
    await sched._load()
    clock[0] += timedelta(seconds=1, milliseconds=5)
    await sched.fire(("p", "j"))
    runs = await etcd.range(keys.runs("p"))
    assert len(runs.kvs) == 1  # while leading, the tick fired
    await etcd.revoke(session.lease_id)  # deposed, but this scheduler object does not know
    clock[0] += timedelta(seconds=1)
    with pytest.raises(LostOwnership):
        await sched.fire(("p", "j"))
    assert len((await etcd.range(keys.runs("p"))).kvs) == 1
    assert (await etcd.range(keys.queue(), count_only=True)).count == 1
    await session.close()


async def test_tick_fires_once_even_with_two_schedulers_sharing_state(etcd, keys):
    """Two leaders with stale views race on one tick: the CAS lets exactly one through."""
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store(etcd, keys, Snowflake(2), lambda: clock[0])
    await store.put_job("p", JobSpec(name="j", command="true", schedules=[{"cron": "* * * * * *"}]))
    session = await Session.open(etcd, 5)
    lead = await Election(etcd, keys, session, "n1").campaign()
    a = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1")
    b = Scheduler(etcd, keys, store, lead, clock=lambda: clock[0], node_id="n1")
    await a._load()
    await b._load()
    clock[0] += timedelta(seconds=3, milliseconds=1)
    await asyncio.gather(a.fire(("p", "j")), b.fire(("p", "j")))
    await b.fire(("p", "j"))  # b re-read the state after losing the CAS: nothing new
    runs = await etcd.range(keys.runs("p"))
    ticks = sorted(r.scheduled_at for r in (store_run(kv) for kv in runs.kvs))
    # the race had something to decide (a test that passes with no run proves nothing); the
    # ticks within the 2 s grace fire, each once (D374)
    assert ticks == [datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC) for s in (2, 3)], ticks
    await session.close()


def store_run(kv):
    from cluster.models import Run

    return Run.model_validate_json(kv.value)


# The claim's lease binding is tested on the worker itself (not on etcd's leases): see
# tests/integration/test_claims.py::test_the_claim_and_slot_vanish_with_the_workers_lease.


async def test_a_node_cut_off_from_etcd_gives_its_lease_up_before_etcd_expires_it(
    etcd_server, etcd, keys
):
    """The session's local deadline: with every refresh failing (etcd unreachable), ``lost`` is
    set before the TTL has run out at etcd, so nothing the node holds is handed to another node
    while this one still acts on it."""
    from tests.chaos.harness import TcpProxy

    proxy = await TcpProxy("127.0.0.1", etcd_server.client_port).start()
    cut_off = Etcd([proxy.endpoint], timeout=1.0)
    await cut_off.connect()
    try:
        session = await Session.open(cut_off, 3)
        await etcd.put(keys.node("a"), "x", lease=session.lease_id)
        granted = time.monotonic()
        await proxy.close()  # no more refresh reaches etcd
        await asyncio.wait_for(session.lost.wait(), 6)
        gave_up = time.monotonic() - granted
        # etcd still holds the lease and the key bound to it: the node gave up first
        assert await etcd.get(keys.node("a")) is not None, "lost only after etcd expired it"
        assert gave_up < 3, gave_up
    finally:
        await cut_off.close()
