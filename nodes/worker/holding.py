"""What a worker holds, counted for its bounds (D260, D390, D456, D460, D467): the runs it holds
to run now (``busy``, bounded by ``capacity``; the weight in use by the weight budget), those
armed ahead of their instant (``armed``, bounded by ``max_armed``), the own claims held before
their arming with no process yet (``held``, bounded by ``max_armed`` apart, D456), and those whose
process has ended and whose end is being written (``finishing``: no seat, no armed place; past
``capacity`` + ``max_armed`` of them the node takes nothing). Claims in flight are counted with
what they will be, so concurrent dispatches and plans cannot over-book. A mixin of
:class:`~nodes.worker.worker.Worker` (its state is the worker's)."""

from __future__ import annotations

from collections.abc import Callable

from nodes.worker.attempt import Execution
from nodes.worker.seating import Seating


class Holding:
    capacity: int
    max_armed: int
    running: dict[str, Execution]
    finishing: set[str]
    seating: Seating
    claiming: set[str]
    _claiming_ahead: set[str]
    _claiming_held: set[str]
    _claim_cost: dict[str, int]

    kick: Callable[[], None]

    def used_weight(self) -> int:
        """The weight of the runs that run or are claimed to run now (not ahead, not held, not
        ended)."""
        apart = (self.seating.ahead, self.seating.held, self.finishing)
        held = sum(ex.cost for rid, ex in self.running.items() if all(rid not in s for s in apart))
        a, h = self._claiming_ahead, self._claiming_held
        claims = sum(c for k, c in self._claim_cost.items() if k not in a and k not in h)
        return held + claims

    def busy(self) -> int:
        """Runs this node holds to run now (claimed, waiting for a seat, running): ``capacity``
        bounds them; held ahead (D260, D456) and finishing are apart, but ``capacity`` +
        ``max_armed`` finishing make the node full as well (D460, D467)."""
        seating = self.seating
        now = len(self.running) - len(seating.ahead) - len(seating.held) - len(self.finishing)
        now += len(self.claiming) - len(self._claiming_ahead) - len(self._claiming_held)
        full = len(self.finishing) >= self.capacity + self.max_armed
        return max(now, self.capacity) if full else now

    def _ended(self, ex: Execution) -> None:
        """A process ended (or a run ended unstarted): finishing from now on, and a claim may
        take its place (D460)."""
        self.finishing.add(ex.run.id)
        self.kick()

    def armed(self) -> int:
        """Runs held ahead of their instant (claimed or being claimed) with their process armed
        or about to be: ``max_armed`` bounds them. While ``capacity`` + ``max_armed`` runs or
        more wait for their end to be written, there is no room ahead either (D467), as ``busy``
        holds back the runs due now (D460)."""
        if len(self.finishing) >= self.capacity + self.max_armed:
            return self.max_armed
        return len(self.seating.ahead) + len(self._claiming_ahead)

    def _arm_room(self) -> bool:
        """Whether a held own claim reaching its arming may arm its process now (D456)."""
        return self.armed() < self.max_armed

    def held(self) -> int:
        """Own claims held (or being created) before their arming, with no process yet (D456):
        ``max_armed`` bounds them too, apart from the armed ones; no room either while the runs
        waiting for their end to be written are past the bound (D467, D459)."""
        if len(self.finishing) >= self.capacity + self.max_armed:
            return self.max_armed
        return len(self.seating.held) + len(self._claiming_held)
