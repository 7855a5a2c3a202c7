"""What a worker holds, counted against its bounds (D260, D390, D456): the runs it holds to run
now (``capacity`` and the weight budget bound them), the runs armed ahead of their instant and
the own claims held before their arming (``max_armed`` bounds each apart). Claims in flight are
counted with what they will be, so concurrent dispatches and plans cannot over-book."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nodes.worker.attempt import Execution
    from nodes.worker.seating import Seating


class Counting:
    """The counting part of :class:`~nodes.worker.worker.Worker` (its state is the worker's)."""

    running: dict[str, Execution]
    finishing: set[str]  # run ids whose process ended, completion not written (D467)
    seating: Seating
    claiming: set[str]
    _claiming_ahead: set[str]
    _claiming_held: set[str]
    _claim_cost: dict[str, int]
    capacity: int
    max_armed: int

    def used_weight(self) -> int:
        """The weight of the runs that run or are claimed to run now (not those ahead)."""
        a, h = self.seating.ahead, self.seating.held  # neither runs now (D260, D456)
        held = sum(ex.cost for rid, ex in self.running.items() if rid not in a and rid not in h)
        a, h = self._claiming_ahead, self._claiming_held
        claims = sum(c for k, c in self._claim_cost.items() if k not in a and k not in h)
        return held + claims

    def busy(self) -> int:
        """Runs this node holds to run now (claimed, running, finishing): ``capacity`` bounds
        them; the runs held ahead of their instant are counted apart (D260, D456)."""
        now = len(self.running) - len(self.seating.ahead) - len(self.seating.held)
        return now + len(self.claiming) - len(self._claiming_ahead) - len(self._claiming_held)

    def armed(self) -> int:
        """Runs held ahead of their instant (claimed or being claimed) with their process armed
        or about to be: ``max_armed`` bounds them. While ``capacity`` + ``max_armed`` runs or
        more wait for their end to be written, there is no room ahead either (D467: ``busy``
        already holds back the runs due now)."""
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
