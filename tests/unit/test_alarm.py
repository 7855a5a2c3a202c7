"""nodes.worker's timers, under asyncio and uvloop: Alarm (one pending wake-up, the earliest wins;
uvloop's ``call_later(0)`` answers a plain Handle without ``when()``: a worker once crashed on it)
and Releases (armed processes due at one instant released together, never early)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvloop

from nodes.worker.attempt import Alarm, Releases

Runner = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    return asyncio.run if request.param == "asyncio" else uvloop.run  # type: ignore[return-value]


def test_zero_and_past_delays_fire_once(run: Runner) -> None:
    async def main() -> None:
        fired: list[float] = []
        loop = asyncio.get_running_loop()
        alarm = Alarm(lambda: fired.append(loop.time()))
        alarm.at(loop.time())  # due now: a plain Handle under uvloop
        alarm.at(loop.time() - 1)  # earlier still: replaces it
        alarm.at(loop.time() + 5)  # later: ignored
        assert alarm.when < loop.time()
        await asyncio.sleep(0.05)
        assert len(fired) == 1
        assert alarm.when == float("inf")

    run(main())


def test_earliest_wins_and_cancel(run: Runner) -> None:
    async def main() -> None:
        fired: list[str] = []
        loop = asyncio.get_running_loop()
        alarm = Alarm(lambda: fired.append("x"))
        alarm.at(loop.time() + 10)
        alarm.at(loop.time() + 0.02)
        assert alarm.when < loop.time() + 1
        async with asyncio.timeout(2):
            while not fired:
                await asyncio.sleep(0.01)
        assert fired == ["x"]
        alarm.at(loop.time() + 0.02)
        alarm.cancel()
        await asyncio.sleep(0.1)
        assert fired == ["x"]

    run(main())


def test_releases_call_a_batch_together_never_early_and_skip_withdrawn(run: Runner) -> None:
    async def main() -> None:
        now = lambda: datetime.now(UTC)  # noqa: E731
        releases = Releases(now)
        when = now() + timedelta(milliseconds=80)
        calls: list[tuple[int, datetime]] = []
        done = asyncio.Event()
        entries = [releases.add(when, lambda i=i: calls.append((i, now()))) for i in range(4)]
        entries[3].cancel()  # withdrawn: a cancel before the tick
        releases.add(when + timedelta(milliseconds=1), done.set)
        async with asyncio.timeout(2):
            await done.wait()
        assert [i for i, _ in calls] == [0, 1, 2]  # in the order added, the withdrawn one not
        assert all(at >= when for _, at in calls)
        assert calls[2][1] - calls[0][1] < timedelta(milliseconds=50)  # one callback, together

    run(main())
