"""How an execution gets its seat among the node's running runs (D260): a run due now waits for
one before its spawn; an armed run (D121) waits for its instant, then for a seat, and is released
in the callback that gives it one. Until then it is held ahead, counted apart (``ahead``). Once
its process has ended, ``on_end`` tells the worker (D460): it holds no seat and no process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from nodes.executor.process import Process
from nodes.worker.attempt import Due, Execution, Releases
from nodes.worker.capacity import Capacity


class Seating:
    def __init__(
        self,
        seats: Capacity,
        releases: Releases,
        clock: Callable[[], datetime],
        on_end: Callable[[Execution], None] = lambda ex: None,
        room: Callable[[], bool] = lambda: False,
    ) -> None:
        self.seats = seats
        self.releases = releases
        self.clock = clock
        self.on_end = on_end  # a process ended (once per execution): the worker's (D460)
        self.room = room  # whether an armed place is free (``armed() < max_armed``)
        self.ahead: set[str] = set()  # run ids claimed ahead of their instant, with no seat yet
        # own claims held before their arming: no process, no seat yet (D456)
        self.held: set[str] = set()
        # held runs past their arming that found no armed place, in arming order (D457)
        self._to_arm: dict[str, Callable[[], None]] = {}

    def arm_waiting(self) -> None:
        """Arm the held runs waiting for an armed place while one is free (D457): called where
        an armed place may have been given back (a seat to an armed run, a claim ended)."""
        while self._to_arm and self.room():
            self._to_arm.pop(next(iter(self._to_arm)))()

    async def hold(self, ex: Execution, ahead: float) -> bool:
        """An own claim held from its creation (D456): wait until ``ahead`` s before its instant
        (the claim-ahead), then arm it (counted in ``ahead``, as a claim ahead) as soon as an
        armed place is free before its instant; at its instant, with none, it goes on unarmed
        and takes a seat as a run due now (counted held until then, so neither bound is passed,
        D457). True then (at once for a run not held); False when a request (cancel, shutdown)
        came first."""
        rid, instant = ex.run.id, ex.run.not_before
        if rid not in self.held or instant is None:
            return True
        arm_at = instant - timedelta(seconds=ahead)
        ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        dues: list[Due] = []

        def go() -> None:
            if not ready.done():
                ready.set_result(True)

        def arm() -> None:
            self.held.discard(rid)
            self.ahead.add(rid)
            go()

        def due() -> None:  # its instant, unarmed: spawned with a seat
            self._to_arm.pop(rid, None)
            go()

        def arming() -> None:
            if not self._to_arm and self.room():
                arm()
            else:  # behind others, or no armed place: armed when one frees, else at its instant
                self._to_arm[rid] = arm
                dues.append(self.releases.add(instant, due))
                self.arm_waiting()

        dues.append(self.releases.add(arm_at, arming))
        woken = asyncio.ensure_future(ex.wake.wait())
        try:
            await asyncio.wait({ready, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            self._to_arm.pop(rid, None)
            for entry in dues:
                entry.cancel()
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
        self.arm_waiting()
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
            self.arm_waiting()  # its armed place to a held run waiting for one (D457)
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
        """The execution's process has ended (or never started): its seat to the next in line,
        and its end noted (the run's recorded end, not when its end is written) and told."""
        if ex.seat is not None:
            ex.seat.give_back()
        self.ahead.discard(ex.run.id)
        if ex.ended_at is None and not ex.done.is_set():
            ex.ended_at = self.clock()
            self.on_end(ex)
        self.held.discard(ex.run.id)
        self.arm_waiting()
