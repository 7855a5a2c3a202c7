"""nodes.worker.Alarm: one pending wake-up, the earliest wins, under asyncio and uvloop (whose
``call_later(0)`` answers a plain Handle without ``when()``: a worker once crashed on it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from nodes.worker import Alarm

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
