"""The HTTP API of one in-process node against a real etcd: scheduled firing — ticks and their
explanation, overlap policies on schedules, backfill, downtime catch-up, max_runs and one-shot
schedules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from nodes.metrics import REGISTRY
from tests.api_helpers import JOBS, RUNS
from tests.conftest import wait_for


async def test_schedule_fires_and_ticks_explain(cluster):
    await cluster.start()
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "tick",
            "command": "true",
            "schedules": [{"cron": "* * * * * *", "parameters": {"src": "cron"}}],
        },
    )

    async def fired():
        _, body = await cluster.request("GET", f"{RUNS}?job=tick&status=succeeded")
        return len(body["runs"]) >= 3 and body["runs"]

    runs = await wait_for(fired, 15, what="3 scheduled runs")
    assert all(r["source"] == "schedule" and r["parameters"] == {"src": "cron"} for r in runs)
    ids = [r["id"] for r in runs]
    assert ids == sorted(ids, reverse=True)  # newest first
    assert len({r["scheduled_at"] for r in runs}) == len(runs)
    status, ticks = await cluster.request("GET", f"{JOBS}/tick/ticks")
    assert status == 200
    assert len(ticks["next"]) == 10
    fired_ids = {t["run"] for t in ticks["ticks"] if t["fate"] == "schedule"}
    assert set(ids) <= fired_ids
    # Disable: no more runs; re-enable: the disabled period is reported, not caught up.
    await cluster.request("PATCH", f"{JOBS}/tick", json={"enabled": False})
    _, job = await cluster.request("GET", f"{JOBS}/tick")
    assert job["enabled"] is False


async def test_overlap_forbid_skips_and_never_overlaps(cluster):
    await cluster.start()
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "fb",
            "command": "sleep 1.6",
            "overlap": "forbid",
            "schedules": [{"cron": "* * * * * *"}],
        },
    )

    async def enough():
        _, body = await cluster.request("GET", f"{RUNS}?job=fb&limit=100")
        return (
            body["runs"]
            if sum(r["status"] == "skipped" for r in body["runs"]) >= 2
            and sum(r["status"] == "succeeded" for r in body["runs"]) >= 2
            else None
        )

    runs = await wait_for(enough, 20, what="skips and successes")
    await cluster.request("PATCH", f"{JOBS}/fb", json={"enabled": False})
    ran = sorted((r for r in runs if r["status"] == "succeeded"), key=lambda r: r["started_at"])
    for a, b in pairwise(ran):
        assert b["started_at"] >= a["finished_at"]
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert all("forbid" in r["error"] for r in skipped)


async def test_overlap_replace_cancels_the_running_one(cluster):
    await cluster.start()
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "rp",
            "command": "sleep 30",
            "overlap": "replace",
            "kill_grace": 1,
            "schedules": [{"cron": "*/2 * * * * *"}],
        },
    )

    async def replaced():
        _, body = await cluster.request("GET", f"{RUNS}?job=rp&status=cancelled")
        return body["runs"]

    cancelled = await wait_for(replaced, 15, what="a replaced run")
    await cluster.request("PATCH", f"{JOBS}/rp", json={"enabled": False})
    assert cancelled[0]["error"]


async def test_backfill_is_idempotent(cluster):
    await cluster.start()
    await cluster.request(
        "POST", JOBS, json={"name": "bf", "command": "true", "schedules": [{"cron": "0 * * * *"}]}
    )
    body = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T05:00:00Z"}
    status, first = await cluster.request("POST", f"{JOBS}/bf/backfill", json=body)
    assert status == 201 and len(first["created"]) == 6 and first["existing"] == 0
    status, second = await cluster.request("POST", f"{JOBS}/bf/backfill", json=body)
    assert status == 200 and second["created"] == [] and second["existing"] == 6
    _, runs = await cluster.request("GET", f"{RUNS}?job=bf&limit=100")
    backfilled = [r for r in runs["runs"] if r["source"] == "backfill"]
    assert sorted(r["scheduled_at"] for r in backfilled) == [
        f"2026-01-01T0{h}:00:00Z" for h in range(6)
    ]
    big = {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    status, resp = await cluster.request("POST", f"{JOBS}/bf/backfill", json=big)
    assert status == 400 and resp["error"]["field"] == "to"


def starts_later_than(seconds: float) -> float:
    """Starts this process's nodes counted more than ``seconds`` after their tick (the nodes of
    ``cluster`` run in the test's process and share its metrics registry)."""
    count = REGISTRY.get_sample_value("cronmesh_start_lag_seconds_count") or 0.0
    le = REGISTRY.get_sample_value("cronmesh_start_lag_seconds_bucket", {"le": str(seconds)})
    return count - (le or 0.0)


async def test_downtime_is_caught_up_per_policy_and_explained(cluster):
    """The whole cluster (one node) is down for ~6 s: `all` catches every tick up, `none` reports
    them missed, `latest` runs one; a job disabled meanwhile reports `disabled` ticks."""
    node = await cluster.start()
    every = [{"cron": "* * * * * *"}]
    for name, policy in (("c-all", "all"), ("c-none", "none"), ("c-latest", "latest")):
        job = {"name": name, "command": "true", "catchup": policy, "schedules": every}
        await cluster.request("POST", JOBS, json=job)
    await cluster.request(
        "POST", JOBS, json={"name": "c-off", "command": "true", "schedules": every}
    )

    async def has_runs(job):
        _, body = await cluster.request("GET", f"{RUNS}?job={job}&limit=5")
        return body["runs"]

    for name in ("c-all", "c-none", "c-latest", "c-off"):
        await wait_for(lambda n=name: has_runs(n), 10, what=f"{name} running")
    await cluster.request("PATCH", f"{JOBS}/c-off", json={"enabled": False})
    await cluster.stop(node)
    late_before = starts_later_than(2.0)
    await asyncio.sleep(6)  # the outage itself: what is measured is what happens after it
    await cluster.start("n2")
    await cluster.request("PATCH", f"{JOBS}/c-off", json={"enabled": True})

    async def ticks(job, pred):
        _, body = await cluster.request("GET", f"{JOBS}/{job}/ticks?limit=200")
        return body if pred(body) else None

    caught = await wait_for(
        lambda: ticks("c-all", lambda b: sum(t["fate"] == "catch-up" for t in b["ticks"]) >= 3),
        10,
        what="catch-up runs",
    )
    assert not caught["not_fired"]
    # the caught-up runs' lag is in the start-lag histogram (it hid a lagging leader's ticks)
    await wait_for(
        lambda: starts_later_than(2.0) - late_before >= 3, 10, what="catch-up lags counted"
    )
    missed = await wait_for(lambda: ticks("c-none", lambda b: b["not_fired"]), 10, what="missed")
    assert missed["not_fired"][0]["fate"] == "missed" and missed["not_fired"][0]["count"] >= 3
    assert not any(t["fate"] == "catch-up" for t in missed["ticks"])
    # `latest` runs only the newest due tick (on time at restart, so a plain `schedule` run);
    # everything older is reported missed.
    latest = await wait_for(lambda: ticks("c-latest", lambda b: b["not_fired"]), 10, what="latest")
    assert sum(t["fate"] == "catch-up" for t in latest["ticks"]) <= 1
    assert latest["not_fired"][0]["fate"] == "missed" and latest["not_fired"][0]["count"] >= 3
    # exactly one run for the outage: the tick right after the missed ones (catch-up, or on
    # time at the restart) — never none
    newest = datetime.fromisoformat(latest["not_fired"][0]["last"]) + timedelta(seconds=1)
    ran = [t for t in latest["ticks"] if t["run"] and datetime.fromisoformat(t["tick"]) == newest]
    assert len(ran) == 1 and ran[0]["fate"] in ("catch-up", "schedule"), (newest, latest)
    off = await wait_for(lambda: ticks("c-off", lambda b: b["not_fired"]), 10, what="disabled")
    assert off["not_fired"][0]["fate"] == "disabled" and off["not_fired"][0]["count"] >= 3
    assert not any(t["fate"] == "catch-up" for t in off["ticks"])
    for name in ("c-all", "c-none", "c-latest", "c-off"):
        await cluster.request("PATCH", f"{JOBS}/{name}", json={"enabled": False})


async def test_max_runs_and_one_shot(cluster):
    await cluster.start()
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "few",
            "command": "true",
            "max_runs": 2,
            "schedules": [{"cron": "* * * * * *"}],
        },
    )
    soon = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    await cluster.request(
        "POST",
        JOBS,
        json={"name": "once", "command": "true", "schedules": [{"at": soon.isoformat()}]},
    )

    async def count(job, n):
        _, body = await cluster.request("GET", f"{RUNS}?job={job}")
        return len(body["runs"]) >= n and body["runs"]

    await wait_for(lambda: count("few", 2), 10, what="two runs")
    once = await wait_for(lambda: count("once", 1), 10, what="one-shot")
    assert once[0]["scheduled_at"] == soon.isoformat().replace("+00:00", "Z")
    _, body = await wait_for(
        lambda: _ticks_with(cluster, "few", "max_runs"), 10, what="max_runs reported"
    )
    assert len(await count("few", 2)) == 2
    _, ticks = await cluster.request("GET", f"{JOBS}/once/ticks")
    assert ticks["next"] == []


async def _ticks_with(cluster, job, fate):
    status, body = await cluster.request("GET", f"{JOBS}/{job}/ticks")
    return (status, body) if any(e["fate"] == fate for e in body["not_fired"]) else None


async def test_same_timing_different_parameters_both_fire_and_replace_does_not_wedge(cluster):
    await cluster.start()
    schedules = [
        {"cron": "* * * * * *", "parameters": {"region": "eu"}},
        {"cron": "* * * * * *", "parameters": {"region": "us"}},
    ]
    await cluster.request(
        "POST",
        JOBS,
        json={
            "name": "two",
            "command": "sleep 5",
            "overlap": "replace",
            "kill_grace": 0,
            "schedules": schedules,
        },
    )

    async def both():
        _, body = await cluster.request("GET", f"{RUNS}?job=two&limit=100")
        regions = [r["parameters"]["region"] for r in body["runs"]]
        return regions.count("eu") >= 3 and regions.count("us") >= 3

    await wait_for(both, 15, what="both schedules firing repeatedly")

    async def replaced():
        _, body = await cluster.request("GET", f"{RUNS}?job=two&limit=100")
        return body if sum(r["status"] == "cancelled" for r in body["runs"]) >= 2 else None

    body = await wait_for(replaced, 15, what="runs replaced (cancelled) by newer ones")
    await cluster.request("PATCH", f"{JOBS}/two", json={"enabled": False})
    regions = [r["parameters"]["region"] for r in body["runs"]]
    assert regions.count("eu") >= 3 and regions.count("us") >= 3, regions
    # both schedules share one tick per second: each tick ran once per schedule, never twice
    keys = [(r["scheduled_at"], r["parameters"]["region"]) for r in body["runs"]]
    assert len(keys) == len(set(keys)), keys
