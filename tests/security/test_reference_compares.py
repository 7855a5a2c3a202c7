"""A job's write compares every group, secret, upstream, calendar and budget it names, all in
one etcd transaction, and etcd refuses more than 128 compares. Each kind was bounded on its own
(64 env entries, 48 upstream documents, 16 calendars per list, 8 budgets) but not their sum:
64 secrets, 30 calendars and an upstream chain of 40 made a write that etcd refused, answered
with an error naming no field. Now the sum is checked first: a 400 naming the field that holds
the most, and nothing written. Also: a job naming more than 32 distinct calendars is a 400
(their existence is read two keys each, in one transaction)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cluster.calendar_store import MAX_NAMED_CALENDARS
from cluster.errors import InvalidInput
from cluster.ids import Snowflake
from cluster.models import JobSpec, parse_model
from cluster.store import Store

NOW = datetime(2026, 12, 6, 15, tzinfo=UTC)


async def _setup(etcd, keys, calendars: int, chain: int, secrets: int) -> None:
    for i in range(secrets):
        await etcd.put(keys.secret("p", f"s{i}"), b"{}")
    for i in range(calendars):
        await etcd.put(keys.calendar("p", f"c{i}"), b"{}")
    for i in range(chain):  # u0 <- u1 <- ... as stored documents
        spec: dict = {"cron": "0 6 * * *"}
        if i:
            spec["depends_on"] = [{"job": f"u{i - 1}"}]
        doc = {"name": f"u{i}", "command": "true", "schedules": [spec]}
        await etcd.put(keys.job("p", f"u{i}"), json.dumps(doc))


def heavy(calendars: int, chain: int, secrets: int) -> JobSpec:
    names = [f"c{i}" for i in range(calendars)]
    schedules = [
        {"cron": "0 7 * * *", "calendar": {"skip": names[i : i + 16]}}
        for i in range(0, calendars, 16)
    ]
    schedules[0]["depends_on"] = [{"job": f"u{chain - 1}"}]
    env = {f"V{i}": {"secret": f"s{i}"} for i in range(secrets)}
    return parse_model(
        JobSpec, {"name": "heavy", "command": "true", "env": env, "schedules": schedules}
    )


async def test_references_past_etcds_compare_limit_are_a_400_naming_a_field(etcd, keys):
    store = Store(etcd, keys, Snowflake(3), lambda: NOW)
    await _setup(etcd, keys, calendars=30, chain=40, secrets=64)
    with pytest.raises(InvalidInput) as exc:
        await store.put_job("p", heavy(calendars=30, chain=40, secrets=64))
    assert exc.value.field == "schedules"  # 40 upstreams + 30 calendars: the most
    assert "etcd takes at most 128" in exc.value.message
    assert await etcd.get(keys.job("p", "heavy")) is None
    # within the limit, the same kinds are written
    await store.put_job("p", heavy(calendars=16, chain=40, secrets=64))
    assert await etcd.get(keys.job("p", "heavy")) is not None


async def test_too_many_distinct_calendars_are_a_400(etcd, keys):
    store = Store(etcd, keys, Snowflake(3), lambda: NOW)
    n = MAX_NAMED_CALENDARS + 16
    await _setup(etcd, keys, calendars=n, chain=1, secrets=0)
    with pytest.raises(InvalidInput) as exc:
        await store.put_job("p", heavy(calendars=n, chain=1, secrets=0))
    assert exc.value.field == "schedules"
    assert f"at most {MAX_NAMED_CALENDARS}" in exc.value.message
