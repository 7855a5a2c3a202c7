"""What a worker holds, counted for its bounds (D260, D390, D460, D467): the runs it holds to run
now (``busy``, bounded by ``capacity``), those held ahead of their instant (``armed``, bounded
by ``max_armed``), those whose process has ended and whose end is being written (``finishing``:
no seat, no armed place; past ``capacity`` + ``max_armed`` of them the node takes nothing), and
the weight in use. A mixin of :class:`~nodes.worker.worker.Worker` (its state is the worker's)."""

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
    _claim_cost: dict[str, int]

    kick: Callable[[], None]

    def used_weight(self) -> int:
        """The weight of the runs that run or are claimed to run now (not ahead, not ended)."""
        apart = (self.seating.ahead, self.finishing)
        held = sum(ex.cost for rid, ex in self.running.items() if all(rid not in s for s in apart))
        claims = sum(c for k, c in self._claim_cost.items() if k not in self._claiming_ahead)
        return held + claims

    def busy(self) -> int:
        """Runs this node holds to run now (claimed, waiting for a seat, running): ``capacity``
        bounds them; held ahead (D260) and finishing are apart, but ``capacity`` + ``max_armed``
        finishing make the node full as well (D460, D467)."""
        now = len(self.running) - len(self.seating.ahead) - len(self.finishing)
        now += len(self.claiming) - len(self._claiming_ahead)
        full = len(self.finishing) >= self.capacity + self.max_armed
        return max(now, self.capacity) if full else now

    def _ended(self, ex: Execution) -> None:
        """A process ended (or a run ended unstarted): finishing from now on, and a claim may
        take its place (D460)."""
        self.finishing.add(ex.run.id)
        self.kick()

    def armed(self) -> int:
        """Runs held ahead of their instant (claimed or being claimed): ``max_armed`` bounds
        them. While ``capacity`` + ``max_armed`` runs or more wait for their end to be written,
        there is no room ahead either (D467), as ``busy`` holds back the runs due now (D460)."""
        if len(self.finishing) >= self.capacity + self.max_armed:
            return self.max_armed
        return len(self.seating.ahead) + len(self._claiming_ahead)
