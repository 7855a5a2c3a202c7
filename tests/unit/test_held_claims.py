"""An own claim held before its arming (D456, ``Seating.hold``), on a real loop and the worker's
release timers: armed at ``arm_at`` when an armed place is free, else armed when one is given
back before its instant, in arming order, else left held until its instant (never before), when
it takes a seat as a run due now (D457); a request while held ends it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
        ended_at=None,
        done=asyncio.Event(),
    )
    seating.held.add(rid)
    return ex


def seating(room: Callable[[], bool] = lambda: True) -> Seating:
    return Seating(Capacity(4), Releases(clock), clock, room=room)


async def test_armed_at_its_arming_when_an_armed_place_is_free() -> None:
    s = seating()
    ex = held_run("r", s, 1.5)
    arm_at = ex.run.not_before - timedelta(seconds=1.2)
    async with asyncio.timeout(5):
        assert await s.hold(ex, 1.2)
    assert arm_at <= clock() < ex.run.not_before  # armed ahead of its instant, not before arming
    assert s.ahead == {"r"} and s.held == set()


async def test_with_no_armed_place_it_stays_held_until_its_instant() -> None:
    asked: list[datetime] = []

    def full() -> bool:
        asked.append(clock())
        return False

    s = seating(full)
    ex = held_run("r", s, 0.3)
    arm_at = ex.run.not_before - timedelta(seconds=0.2)
    async with asyncio.timeout(5):
        assert await s.hold(ex, 0.2)
    assert asked and asked[0] >= arm_at  # asked from its arming on
    assert clock() >= ex.run.not_before  # then no process before its instant
    assert s.ahead == set() and s.held == {"r"}  # counted held until it has a seat
    assert await s.take(ex)  # type: ignore[arg-type]
    assert s.held == set() and s.seats.used == 1


async def test_a_request_while_held_ends_the_wait_and_nothing_fires_later() -> None:
    asked: list[bool] = []
    s = seating(lambda: asked.append(True) or True)
    ex = held_run("r", s, 0.3)
    waiting = asyncio.ensure_future(s.hold(ex, 0.2))
    await asyncio.sleep(0)
    ex.wake.set()  # a cancel, or the node shutting down
    async with asyncio.timeout(5):
        assert await waiting is False
    s.done(ex)  # type: ignore[arg-type]
    assert s.held == set() and s.ahead == set()
    assert await s.hold(ex, 0.2)  # not held (any more): nothing to wait for
    done = asyncio.Event()
    s.releases.add(ex.run.not_before + timedelta(seconds=0.05), done.set)
    async with asyncio.timeout(5):
        await done.wait()  # past its arming and its instant
    assert asked == [] and s.ahead == set()


async def test_a_place_given_back_before_the_instant_arms_the_first_held_run_waiting() -> None:
    limit = [0]  # max_armed, as the worker counts armed runs against it
    s = seating(lambda: len(s.ahead) < limit[0])
    first, second = held_run("a", s, 1.5), held_run("b", s, 1.5)
    arm_at = first.run.not_before - timedelta(seconds=1.3)
    second.run.not_before = first.run.not_before
    holds = [asyncio.ensure_future(s.hold(ex, 1.3)) for ex in (first, second)]
    done = asyncio.Event()
    s.releases.add(arm_at + timedelta(seconds=0.05), done.set)
    async with asyncio.timeout(5):
        await done.wait()  # both past their arming, no place: waiting, held
    assert s.held == {"a", "b"} and not any(h.done() for h in holds)
    limit[0] = 1
    s.arm_waiting()  # a place given back (a seat to an armed run, a claim ended)
    assert s.ahead == {"a"} and s.held == {"b"}  # at once, in arming order
    async with asyncio.timeout(5):
        assert await holds[0] is True
    assert clock() < first.run.not_before and not holds[1].done()  # armed before its instant
    async with asyncio.timeout(5):
        assert await holds[1] is True  # at its instant, unarmed
    assert clock() >= second.run.not_before and s.held == {"b"} and s.ahead == {"a"}
