"""The worker's orphan check gives up the claim of an attempt it already ran and could not record
(the leader then records it as lost). Its read of the claims can be older than a completion that
lands while it walks them: that claim is gone, the give-up's compare leaves everything as it is,
and nothing may be reported (D382). Loaded benchmark windows logged "giving up the claim of an
attempt already run" as an error 151 and 254 times in windows where every such run had
succeeded."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from cluster.etcd import Etcd
from cluster.ids import Snowflake
from cluster.keys import Keys
from cluster.session import Session
from cluster.store import Store
from logstore.service import build_logs
from nodes.config import NodeConfig
from nodes.worker.worker import Worker
from tests.conftest import wait_for


def now() -> datetime:
    return datetime.now(UTC)


async def _check_once(w: Worker, after_read: Any) -> list[dict[str, Any]]:
    """One pass of the orphan check, ``after_read`` run between its read and its walk; the
    logs of that pass."""
    reads = 0
    original = w.etcd.range_all

    async def read(*args: Any, **kw: Any) -> Any:
        nonlocal reads
        res = await original(*args, **kw)
        reads += 1
        if reads == 1:
            await after_read()
        return res

    w.etcd.range_all = read  # type: ignore[method-assign]
    with capture_logs() as logs:
        task = asyncio.create_task(w._adopt_orphans())
        try:
            w._orphan_check.set()
            await wait_for(lambda: reads >= 1, 10, what="the first read")

            async def second_pass() -> bool:  # the first pass is over once a second one read
                w._orphan_check.set()
                await asyncio.sleep(0.05)
                return reads >= 2

            await wait_for(second_pass, 10, what="a second pass")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            w.etcd.range_all = original  # type: ignore[method-assign]
    return logs


async def test_a_claim_completed_after_the_read_is_left_alone_and_not_reported(
    etcd_server, keys: Keys, tmp_path: Path
):
    etcd = Etcd([etcd_server.endpoint])
    await etcd.connect()
    session = await Session.open(etcd, 5)
    cfg = NodeConfig(node_id="a", data_dir=str(tmp_path / "a"))
    w = Worker(
        etcd=etcd,
        keys=keys,
        store=Store(etcd, keys, Snowflake(3), now),
        session=session,
        node_id="a",
        properties={},
        capacity=4,
        logs=build_logs(cfg.log_settings()),
        work_dir=str(tmp_path / "a" / "work"),
        clock=now,
        handoff_delay=0.0,
    )
    try:
        claim = {"attempt": 1, "project": "p"}
        done, stale = "0000000000000000001", "0000000000000000002"
        for run_id in (done, stale):
            await etcd.put(keys.claim(run_id), json.dumps(claim), lease=session.lease_id)
            w._executed[run_id] = 1  # ran here; its completion is not (yet) recorded

        async def completion_lands() -> None:  # the completion of ``done`` deletes its claim
            await etcd.delete(keys.claim(done))

        logs = await _check_once(w, completion_lands)
        gave_up = [e.get("run") for e in logs if e["log_level"] == "error"]
        # ``stale`` is given up (reported once); ``done`` was completed, not given up
        assert gave_up == [stale], logs
        assert await etcd.get(keys.claim(stale)) is None
        assert await etcd.get(keys.claim(done)) is None
    finally:
        await w.close()
        await session.close()
        await etcd.close()
