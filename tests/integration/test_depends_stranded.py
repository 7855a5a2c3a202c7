"""A waiting slot ends at its max_wait even when its upstreams cannot be read (review of D294,
D332). Before, a look that could not read an upstream (a job document written by a newer
version during a rolling upgrade: ``extra="forbid"`` refuses its new field) raised, was retried
every 30 s, and never reached the decision that ends the slot: it waited for ever, its tick
record open, counting against the waiting quota. And a slot whose job the scheduler's cache
does not hold was dropped without settling its record."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import JobSpec, parse_model
from tests.integration.test_depends_fencing import _load
from tests.integration.test_fencing import EVERY_SECOND, P, Rig


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def _held(rig: Rig) -> tuple[object, str]:
    await rig.store.put_job(P, JobSpec(name="up", command="true", schedules=EVERY_SECOND))
    down = {
        "name": "down",
        "command": "true",
        "schedules": [{**EVERY_SECOND[0], "depends_on": [{"job": "up"}], "max_wait": "60s"}],
    }
    await rig.store.put_job(P, parse_model(JobSpec, down))
    leader = await rig.leader("n1")
    rig.clock.advance(1.005)
    await leader.sched.fire((P, "down"))
    [key] = await _load(rig, leader.sched.slots.deps)
    return leader, key


async def _record(rig: Rig) -> dict:
    res = await rig.etcd.range(rig.keys.ticks(P, "down"))
    return json.loads(res.kvs[0].value)


async def test_an_unreadable_upstream_does_not_hold_a_slot_past_its_max_wait(rig):
    leader, key = await _held(rig)
    waiter = leader.sched.slots.deps
    up = json.loads((await rig.etcd.get(rig.keys.job(P, "up"))).value)
    up["a_field_of_a_newer_version"] = 1
    await rig.etcd.put(rig.keys.job(P, "up"), json.dumps(up))
    with pytest.raises(ValueError):  # before its max_wait: retried later, as any failed look
        await waiter._look(key)
    assert await rig.etcd.get(key) is not None
    rig.clock.advance(61)
    await waiter._look(key)
    assert await rig.etcd.get(key) is None
    rec = await _record(rig)
    assert rec["outcome"] == "skipped_dependency" and not rec.get("waiting"), rec
    assert "could not be read" in rec["reason"]
    assert await rig.runs("down") == []


async def test_a_slot_of_a_job_the_cache_lacks_is_not_dropped_unsettled(rig):
    leader, key = await _held(rig)
    waiter = leader.sched.slots.deps
    waiter.job_of = lambda jk: None  # the job is in etcd, not in the scheduler's cache
    await waiter._look(key)
    assert await rig.etcd.get(key) is not None  # kept, not silently deleted
    assert (await _record(rig)).get("waiting") is True
    rig.clock.advance(86_401)  # the default max_wait
    await waiter._look(key)
    assert await rig.etcd.get(key) is None
    assert (await _record(rig))["outcome"] == "skipped_dependency"


async def test_a_slot_released_after_an_edit_runs_the_job_as_it_is_now(rig):
    """Before, the run kept the snapshot minted when the tick fired: a slot may wait up to seven
    days, and an admin who changed the job's command (or its run_as) meanwhile had the old one
    run at release (D334)."""
    leader, key = await _held(rig)
    minted = json.loads((await rig.etcd.get(key)).value)["run"]
    assert minted["snapshot"]["command"] == "true"
    edited = {
        "name": "down",
        "command": "echo edited",
        "schedules": [{**EVERY_SECOND[0], "depends_on": [{"job": "up"}], "max_wait": "60s"}],
    }
    await rig.store.put_job(P, parse_model(JobSpec, edited))
    kv = await rig.etcd.get(rig.keys.job(P, "down"))
    leader.sched.cache.on_job(kv.key, kv.value)  # the scheduler's cache, as its watch would
    up_job = json.loads((await rig.etcd.get(rig.keys.job(P, "up"))).value)
    up_job["schedules"] = []  # the upstream now has no slot in the window: met
    await rig.etcd.put(rig.keys.job(P, "up"), json.dumps(up_job))
    await leader.sched.slots.deps._look(key)
    [run] = await rig.runs("down")
    assert run.id == minted["id"] and run.snapshot.command == "echo edited"


async def test_the_slots_view_of_a_slot_whose_upstream_cannot_be_read_is_not_a_500(rig):
    """The slots page read each waiting slot's upstreams live (D295): an unreadable upstream
    document raised through the handler, a 500 for the whole page."""
    from nodes.api.slots import SlotsApi

    _, key = await _held(rig)
    up = json.loads((await rig.etcd.get(rig.keys.job(P, "up"))).value)
    up["a_field_of_a_newer_version"] = 1
    await rig.etcd.put(rig.keys.job(P, "up"), json.dumps(up))
    job = await rig.store.get_job(P, "down")
    page = {"slots": [{"name": key.rsplit("/", 1)[-1], "waiting": True, "open": True}]}
    out = await SlotsApi._waiting(rig.store, page, job)
    assert "cannot be read" in out["slots"][0]["waiting_for"]["error"]


async def test_an_upstream_slot_whose_record_retention_pruned_is_failed_not_pending(rig):
    """Retention keeps a job's newest tick records only (keep_runs x 2). A window slot older than
    the oldest kept record counted *pending* — as if its time had not come — so a slot waiting
    on it showed "pending" until its max_wait; now it is failed, and the note says why (as for
    a pruned run, D292)."""
    from cluster.depends import Waiting
    from cluster.depends_store import judge_waiting
    from cluster.models import ScheduleSpec

    hourly = {"name": "up", "command": "true", "schedules": [{"cron": "0 * * * *"}]}
    up, _ = await rig.store.put_job(P, parse_model(JobSpec, hourly))
    fp = up.schedules[0].fingerprint()
    day = rig.clock().replace(hour=0)
    since = day.replace(year=2025)
    for hour in (20, 21, 22, 23):  # the kept records: earlier hours were pruned
        tick = day.replace(hour=hour)
        rec = {"tick": tick.isoformat(), "schedule": fp, "run": None, "outcome": "skipped_calendar"}
        await rig.etcd.put(
            rig.keys.tick(P, "up", fp, int(tick.timestamp() * 1000)), json.dumps(rec)
        )
    spec = parse_model(
        ScheduleSpec, {"cron": "0 0 * * *", "depends_on": [{"job": "up", "window": "1d"}]}
    )
    slot = day.replace(hour=23, minute=30)
    up_doc = json.loads((await rig.etcd.get(rig.keys.job(P, "up"))).value)
    up_doc["active_since"] = since.isoformat()
    await rig.etcd.put(rig.keys.job(P, "up"), json.dumps(up_doc))
    w = Waiting("k", P, "down", "n", slot, spec.fingerprint(), "schedule", {}, "t", None, since)
    [j] = await judge_waiting(rig.etcd, rig.keys, P, spec, w)
    assert j.counts["excused"] == 4 and j.counts["failed"] == 20 and j.counts["pending"] == 0, j
    assert "no longer kept" in j.note and not j.met
