"""Waiting with a deadline without losing a cancel.

On Python 3.11, ``asyncio.wait_for(aw, t)`` returns ``aw``'s result when the waiting task is
cancelled just as ``aw`` completes (an event set in the same loop iteration as the cancel): the
cancel is swallowed and a loop around the wait goes on forever. A node whose shutdown cancelled
its leader while a watch event woke a due queue never stopped (CI, stop 32). These use
``asyncio.timeout``, which delivers the cancel to the awaiting coroutine itself (D420).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], seconds: float | None) -> T:
    """``await aw``, raising ``TimeoutError`` after ``seconds`` (None: no deadline)."""
    async with asyncio.timeout(seconds):
        return await aw


async def woken(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait for ``event`` at most ``seconds``: True if it is set, False on the deadline."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
