"""A node whose event loop is held past its lease TTL gives the lease up (D109); the warning now
says what held the loop (D381): the loop thread's innermost frames, so a lease lost under load in
production or in a benchmark window names its cause without a profiler."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from cluster.session import Session


def hold_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # the point: nothing on the event loop runs meanwhile


async def test_a_stalled_loop_is_reported_with_where_it_was_held(etcd):
    session = await Session.open(etcd, 2)
    try:
        with capture_logs() as logs:
            hold_the_loop_for(4.5)  # > the TTL (2 s) plus a refresh interval, with room for load
            await asyncio.wait_for(session.lost.wait(), 10)
        stalls = [e for e in logs if e["event"] == "event loop stalled; lease not refreshed"]
        assert stalls, logs
        where = stalls[0]["where"]
        assert any("hold_the_loop_for" in frame for frame in where), where
        assert where[-1].startswith("test_stall_where.py:"), where  # innermost: the sleep here
        assert stalls[0]["stalled_s"] >= 2.0
        # the samples taken at the refreshes since the loop fell 1 s behind: the same place
        assert all("hold_the_loop_for" in e for e in stalls[0]["earlier"]), stalls[0]
    finally:
        await session.close()
