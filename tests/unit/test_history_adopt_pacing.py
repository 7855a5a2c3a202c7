"""The leader's search for run records written before D318 (no charge yet) backs off once it
finds none: a keys-only read of every run and execution each minute, forever, is what a large
installation can least afford."""

from __future__ import annotations

from nodes.leader.history import ADOPT_BATCH, ADOPT_EVERY, ADOPT_IDLE_MAX, adopt_delay


def test_a_full_batch_goes_on_at_once_and_some_found_in_a_minute() -> None:
    assert adopt_delay(ADOPT_BATCH, ADOPT_EVERY) == 1.0
    assert adopt_delay(3, 1800.0) == ADOPT_EVERY  # records came back (a node not upgraded)
    assert adopt_delay(None, 1800.0) == ADOPT_EVERY  # a failed pass is tried again soon


def test_nothing_found_doubles_the_wait_up_to_an_hour() -> None:
    waits = []
    delay = ADOPT_EVERY
    for _ in range(10):
        delay = adopt_delay(0, delay)
        waits.append(delay)
    assert waits[:3] == [120.0, 240.0, 480.0]
    assert waits[-1] == ADOPT_IDLE_MAX and max(waits) == ADOPT_IDLE_MAX
    assert adopt_delay(0, 1.0) == 2 * ADOPT_EVERY  # after a full batch ran dry
