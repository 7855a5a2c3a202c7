"""When a parked queue entry is looked at again (D358): a new view version, its time, or never
for a parking no view ends; an entry's own change drops it."""

from __future__ import annotations

import math

import pytest

from nodes.worker.parking import ANY, Parking


@pytest.mark.parametrize(
    ("parked_at", "until", "version", "now", "parked"),
    [
        (3, math.inf, 3, 100.0, True),  # not a candidate: parked while the view stays
        (3, math.inf, 4, 100.0, False),  # the view moved: look again
        (3, 101.0, 3, 100.0, True),  # another node's first second ...
        (3, 101.0, 3, 101.0, False),  # ... its hand-off time came
        (3, 101.0, 4, 100.5, False),  # the view moved first
        (ANY, math.inf, 9, 1e9, True),  # the node's own properties or policy: never
    ],
)
def test_parked_until(parked_at, until, version, now, parked):
    p = Parking()
    p.park("k", parked_at, until)
    assert ("k" in p.parked(version, now)) == parked
    assert len(p) == int(parked)  # a parking that ended is forgotten
    assert p.looks(["z", "k", "a"], version, now) == (["a", "z"] if parked else ["a", "k", "z"])


def test_the_earliest_end_wakes_the_worker_and_a_changed_entry_is_looked_at_again():
    p = Parking()
    assert p.next_end(0.0) is None
    p.park("a", 1, 10.0)
    p.park("b", 1, 4.0)
    p.park("c", 1)
    p.park("d", ANY)
    assert p.next_end(1.0) == 3.0  # b's hand-off, the earliest
    assert set(p.parked(1, 5.0)) == {"a", "c", "d"}  # b's time came
    assert p.next_end(5.0) == 5.0
    p.park("a", 1, 20.0)  # looked at again and parked anew: the old end time is stale
    assert set(p.parked(1, 12.0)) == {"a", "c", "d"}
    p.drop("c")  # its queue entry changed or went
    assert set(p.parked(1, 12.0)) == {"a", "d"}
    assert set(p.parked(2, 12.0)) == {"d"}  # the view moved: only the fixed one holds
    p.clear()
    assert len(p) == 0 and p.next_end(0.0) is None
