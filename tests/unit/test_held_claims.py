"""An own claim held before its arming (D456, ``Seating.hold``), on a real loop and the worker's
release timers: armed at ``arm_at`` when an armed place is free, else left held until its
instant (never before), when it takes a seat as a run due now; a request while held ends it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from nodes.worker.attempt import Releases
from nodes.worker.capacity import Capacity
from nodes.worker.seating import Seating


def clock() -> datetime:
    return datetime.now(UTC)


def held_run(rid: str, seating: Seating, until: float) -> Any:
    ex = SimpleNamespace(
        run=SimpleNamespace(id=rid, not_before=clock() + timedelta(seconds=until)),
        wake=asyncio.Event(),
        cost=1,
        seat=None,
    )
    seating.held.add(rid)
    return ex


def seating() -> Seating:
    return Seating(Capacity(4), Releases(clock), clock)


async def test_armed_at_its_arming_when_an_armed_place_is_free() -> None:
    s = seating()
    ex = held_run("r", s, 1.5)
    arm_at = ex.run.not_before - timedelta(seconds=1.2)
    async with asyncio.timeout(5):
        assert await s.hold(ex, arm_at, lambda: True)
    assert arm_at <= clock() < ex.run.not_before  # armed ahead of its instant, not before arming
    assert s.ahead == {"r"} and s.held == set()


async def test_with_no_armed_place_it_stays_held_until_its_instant() -> None:
    s = seating()
    ex = held_run("r", s, 0.3)
    asked: list[datetime] = []
    arm_at = ex.run.not_before - timedelta(seconds=0.2)

    def full() -> bool:
        asked.append(clock())
        return False

    async with asyncio.timeout(5):
        assert await s.hold(ex, arm_at, full)
    assert len(asked) == 1 and asked[0] >= arm_at  # asked once, at its arming
    assert clock() >= ex.run.not_before  # then no process before its instant
    assert s.ahead == set() and s.held == {"r"}  # counted held until it has a seat
    assert await s.take(ex)  # type: ignore[arg-type]
    assert s.held == set() and s.seats.used == 1


async def test_a_request_while_held_ends_the_wait_and_nothing_fires_later() -> None:
    s = seating()
    ex = held_run("r", s, 0.3)
    arm_at = ex.run.not_before - timedelta(seconds=0.2)
    asked: list[bool] = []
    waiting = asyncio.ensure_future(s.hold(ex, arm_at, lambda: asked.append(True) or True))
    await asyncio.sleep(0)
    ex.wake.set()  # a cancel, or the node shutting down
    async with asyncio.timeout(5):
        assert await waiting is False
    s.done(ex)  # type: ignore[arg-type]
    assert s.held == set() and s.ahead == set()
    done = asyncio.Event()
    s.releases.add(ex.run.not_before + timedelta(seconds=0.05), done.set)
    async with asyncio.timeout(5):
        await done.wait()  # past its arming and its instant
    assert asked == [] and s.ahead == set()
