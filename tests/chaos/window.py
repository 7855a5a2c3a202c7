"""Closing a tick window: a scenario disables its jobs and checks the ticks up to the window's
end only once the leader has decided them. On a loaded machine a leader can be seconds behind;
a job disabled before its leader reached the window's last ticks never fires them, and the
checker counted as missed what the product never missed (D375)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

from cluster.errors import Unavailable
from cluster.etcd import Etcd
from cluster.keys import Keys


async def handled_through(
    etcd: Etcd, keys: Keys, job: str, end: datetime, timeout: float = 60
) -> None:
    """Wait until ``job``'s (project ``default``) schedule state says every tick up to ``end`` is decided (fired or
    recorded missed: the checker tells which). A leader that is still behind after ``timeout``
    is left to the checker too, which then reports the ticks it never decided."""
    key = keys.schedule_state("default", job)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kv = await etcd.get(key)
        except Unavailable:  # the checker's own client, on a loaded machine: try again
            await asyncio.sleep(0.2)
            continue
        state = json.loads(kv.value) if kv else {}
        lasts = [s.get("last_tick") for s in state.get("schedules", {}).values()]
        if any(last and _utc(last) >= end for last in lasts):
            return
        await asyncio.sleep(0.2)


def _utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
