"""How an execution gets its seat among the node's running runs (D260): a run due now waits for
one before its spawn; an armed run (D121) waits for its instant, then for a seat, and is released
in the callback that gives it one. Until then it is held ahead, counted apart (``ahead``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from nodes.executor.process import Process
from nodes.worker.attempt import Due, Execution, Releases
from nodes.worker.capacity import Capacity


class Seating:
    def __init__(self, seats: Capacity, releases: Releases, clock: Callable[[], datetime]) -> None:
        self.seats = seats
        self.releases = releases
        self.clock = clock
        self.ahead: set[str] = set()  # run ids claimed ahead of their instant, with no seat yet
        # own claims held before their arming: no process, no seat yet (D456)
        self.held: set[str] = set()

    async def hold(self, ex: Execution, arm_at: datetime, room: Callable[[], bool]) -> bool:
        """An own claim held from its creation (D456): wait for ``arm_at`` (its instant less the
        claim-ahead), then arm it (counted in ``ahead``, as a claim ahead) if ``room()`` says an
        armed place is free, else wait for its instant, when it takes a seat as a run due now
        (counted held until then, so neither bound is passed). True then; False when a request
        (cancel, shutdown) came first."""
        assert ex.run.not_before is not None
        ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        dues: list[Due] = []

        def go() -> None:
            if not ready.done():
                ready.set_result(True)

        def arm() -> None:
            if room():
                self.held.discard(ex.run.id)
                self.ahead.add(ex.run.id)
                go()
            else:  # no armed place: spawned at its instant, with a seat
                dues.append(self.releases.add(ex.run.not_before, go))  # type: ignore[arg-type]

        dues.append(self.releases.add(arm_at, arm))
        woken = asyncio.ensure_future(ex.wake.wait())
        try:
            await asyncio.wait({ready, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            for due in dues:
                due.cancel()
        return ready.done()

    async def take(self, ex: Execution) -> bool:
        """Wait for a seat: True once held, False when a request (cancel, shutdown) came first.
        The caller gives the seat back (or leaves the line) with ``ex.seat.give_back()``."""
        held = asyncio.get_running_loop().create_future()
        ex.seat = self.seats.take(ex.cost, lambda: None if held.done() else held.set_result(True))
        if not held.done():
            woken = asyncio.ensure_future(ex.wake.wait())
            try:
                await asyncio.wait({held, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
            if not held.done():
                return False
        self.ahead.discard(ex.run.id)
        self.held.discard(ex.run.id)
        return True

    async def released(
        self, ex: Execution, proc: Process, when: datetime
    ) -> datetime | bool | None:
        """Wait for an armed process's instant, then for a seat (at once unless the node runs
        ``capacity`` runs already), and release it: when it started, None when it could not be
        released (it died), False when a request (cancel, shutdown) came first."""
        started: asyncio.Future[datetime | None] = asyncio.get_running_loop().create_future()

        def start() -> None:  # synchronous: at the instant, or when a seat is given back
            self.ahead.discard(ex.run.id)
            if not started.done():
                started.set_result(self.clock() if proc.release() else None)

        def go() -> None:
            ex.seat = self.seats.take(ex.cost, start)

        due = self.releases.add(when, go)
        woken = asyncio.ensure_future(ex.wake.wait())
        try:
            await asyncio.wait({started, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # cancelled (lease lost), or a request: never release it
            woken.cancel()
            if not started.done():
                due.cancel()
                started.cancel()
                if ex.seat is not None:
                    ex.seat.give_back()  # out of the line
        return False if started.cancelled() else started.result()

    def done(self, ex: Execution) -> None:
        """The execution's process has ended (or never started): its seat to the next in line."""
        if ex.seat is not None:
            ex.seat.give_back()
        self.ahead.discard(ex.run.id)
        self.held.discard(ex.run.id)
