"""When the leader reads a run back after its claim's deletion (D136, D473): only once the
active keys' watch has passed the deletion, or after ``LOST_CHECK_MAX`` when that watch sees
nothing — but not while it is moving, only behind (a loaded leader), up to ``LOST_CHECK_BEHIND``:
each read-back is a range and a decoded record on the loop that lags."""

from __future__ import annotations

import pytest

from nodes.leader.reaper import LOST_CHECK_BEHIND, LOST_CHECK_DELAY, LOST_CHECK_MAX, look_again

GONE = 1_000  # the claim's deletion's revision


@pytest.mark.parametrize(
    ("rev", "waited", "seen", "again", "why"),
    [
        (GONE, LOST_CHECK_DELAY, 900, False, "passed: the active key is known, look now"),
        (GONE + 50, LOST_CHECK_MAX, 900, False, "passed"),
        (990, LOST_CHECK_DELAY, 900, True, "behind, early"),
        (900, LOST_CHECK_DELAY, 900, True, "still, early"),
        (900, LOST_CHECK_MAX, 900, False, "a watch that sees nothing: read back at 2 s"),
        (950, LOST_CHECK_MAX, 900, True, "moving but behind at 2 s: wait for it (D473)"),
        (999, LOST_CHECK_BEHIND - LOST_CHECK_DELAY, 998, True, "moving, below the bound"),
        (999, LOST_CHECK_BEHIND, 998, False, "moving at the bound: read back"),
        (950, 2 * LOST_CHECK_MAX, 950, False, "stopped moving past 2 s: read back"),
    ],
)
def test_when_a_lost_run_check_waits_for_the_active_keys_watch(rev, waited, seen, again, why):
    assert look_again(rev, GONE, waited, seen) is again, why


def test_a_lagging_watch_reads_nothing_back_for_longer_than_before():
    # a loaded leader: the watch moves 10 revisions per step, 100 behind at the claim's deletion
    rev, waited, steps = GONE - 100, LOST_CHECK_DELAY, 0
    seen = rev - 10
    while look_again(rev, GONE, waited, seen):
        seen, rev, waited, steps = rev, rev + 10, waited + LOST_CHECK_DELAY, steps + 1
    assert rev >= GONE, (rev, waited)  # it waited until the watch passed: no read-back needed
    assert waited > LOST_CHECK_MAX  # before D473 it read back at 2 s, 60 revisions behind
