"""Loops the leader's parts share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from cluster.errors import Unavailable
from cluster.etcd import Compacted

log = structlog.get_logger(__name__)


async def periodic(every: float, fn: Callable[[], Awaitable[object]]) -> None:
    """Call ``fn`` every ``every`` seconds while leading; an etcd outage or a compaction is
    logged and waits for the next round, anything else ends the leadership term."""
    while True:
        try:
            await fn()
        except (Unavailable, Compacted) as exc:
            log.warning("periodic leader task failed", task=fn.__name__, error=str(exc))
        await asyncio.sleep(every)
