"""When a parked queue entry is looked at again (D358): a new view version, its time, or never
for a parking no view ends; an entry's own change drops it."""

from __future__ import annotations

import math

import pytest

from nodes.worker.parking import ANY, Parking


@pytest.mark.parametrize(
    ("parked_at", "until", "version", "now", "left"),
    [
        (3, math.inf, 3, 100.0, math.inf),  # not a candidate: parked while the view stays
        (3, math.inf, 4, 100.0, None),  # the view moved: look again
        (3, 101.0, 3, 100.0, 1.0),  # another node's first second: look at its hand-off time
        (3, 101.0, 3, 101.0, None),  # the hand-off time came
        (3, 101.0, 4, 100.5, None),  # the view moved first
        (ANY, math.inf, 9, 1e9, math.inf),  # the node's own properties or policy: never
    ],
)
def test_parked_until(parked_at, until, version, now, left):
    p = Parking()
    p.park("k", parked_at, until)
    assert p.left("k", version, now) == left
    assert len(p) == (0 if left is None else 1)  # a parking that ended is forgotten


def test_an_entry_that_changes_or_goes_is_looked_at_again():
    p = Parking()
    p.park("a", 1)
    p.park("b", ANY)
    p.drop("a")
    assert p.left("a", 1, 0.0) is None
    assert p.left("zzz", 1, 0.0) is None  # never parked
    p.clear()
    assert p.left("b", 1, 0.0) is None and len(p) == 0
