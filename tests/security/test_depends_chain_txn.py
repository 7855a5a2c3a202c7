"""A job's write compares every document on its upstream chains (D293) in its one transaction,
and etcd refuses a transaction of more than 128 compares (``--max-txn-ops``). The chain search
stopped at 256 documents: a chain of 130 was read in full, then the write was refused by etcd
with a 422 ``rejected`` naming no field. Now the chain is bounded below etcd's limit (48, D333)
and the write is a 400 naming the dependency."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cluster.depends_spec import MAX_CHAIN
from cluster.errors import InvalidInput
from cluster.ids import Snowflake
from cluster.models import JobSpec, parse_model
from cluster.store import MAX_TXN_OPS, Store

NOW = datetime(2026, 12, 6, 15, tzinfo=UTC)


def job(name: str, on: str | None = None) -> dict:
    spec: dict = {"cron": "0 6 * * *"}
    if on is not None:
        spec["depends_on"] = [{"job": on}]
    return {"name": name, "command": "true", "schedules": [spec]}


async def test_a_long_upstream_chain_is_a_400_naming_the_field_not_an_etcd_refusal(etcd, keys):
    assert MAX_CHAIN + 64 + 8 + 2 < MAX_TXN_OPS  # room for secrets, budgets, doc, group
    store = Store(etcd, keys, Snowflake(3), lambda: NOW)
    for i in range(130):  # j0 ← j1 ← … ← j129, written as stored documents
        doc = job(f"j{i}", f"j{i - 1}" if i else None)
        await etcd.put(keys.job("p", f"j{i}"), json.dumps(doc))
    with pytest.raises(InvalidInput) as exc:
        await store.put_job("p", parse_model(JobSpec, job("top", "j129")))
    assert exc.value.field == "schedules.0.depends_on.0.job"
    assert f"more than {MAX_CHAIN}" in exc.value.message
    assert await etcd.get(keys.job("p", "top")) is None
    # a chain within the bound is written
    await store.put_job("p", parse_model(JobSpec, job("short", f"j{MAX_CHAIN - 2}")))
    assert await etcd.get(keys.job("p", "short")) is not None
