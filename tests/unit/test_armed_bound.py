"""What a worker counts as armed and as busy (D260, D390), on plain values: a run claimed ahead
of its instant stays counted as armed until it has a seat, even when the instant passed while
its claim was in flight (a loaded machine, a slow etcd). Counted as busy instead, such runs were
outside both bounds: the ahead pass (which runs while busy >= capacity) kept claiming, and one
node held 783 claimed runs against capacity 128 + max_armed 512 (bench.e2eprobe, 400 jobs every
second at load 24)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from nodes.worker.executing import Executing
from nodes.worker.worker import Worker

NOW = datetime(2026, 12, 7, 0, 0, 0, tzinfo=UTC)


def worker_state() -> Any:
    """The part of a Worker that ``_start``, ``busy`` and ``armed`` read."""
    return SimpleNamespace(
        session=SimpleNamespace(lost=asyncio.Event()),
        running={},
        seating=SimpleNamespace(ahead=set(), held=set()),
        clock=lambda: NOW,
        _controls={},
        _interrupted=asyncio.Event(),
        _spawn=lambda coro: None,
        _execute=lambda ex: None,
        claiming=set(),
        _claiming_ahead=set(),
        _claiming_held=set(),
        _claim_cost={},
        finishing=set(),
        capacity=128,
        max_armed=512,
    )


def run(rid: str, not_before: datetime | None) -> Any:
    return SimpleNamespace(id=rid, not_before=not_before)


def test_claims_ahead_count_as_armed_even_when_their_instant_passed_during_the_claim():
    w = worker_state()
    Executing._start(w, run("ahead", NOW + timedelta(seconds=0.5)), 1, None)
    Executing._start(w, run("late", NOW - timedelta(seconds=0.3)), 2, None)
    Executing._start(w, run("now", None), 3, None)  # claimed due now: not_before cleared
    assert w.seating.ahead == {"ahead", "late"}
    assert Worker.armed(w) == 2
    assert Worker.busy(w) == 1


def test_late_claims_ahead_do_not_grow_what_counts_against_capacity():
    w = worker_state()
    for i in range(1000):  # every claim ahead came back after its instant
        Executing._start(w, run(f"r{i}", NOW - timedelta(seconds=1)), i, None)
    assert Worker.busy(w) == 0  # the ahead pass is bounded by max_armed on these
    assert Worker.armed(w) == 1000


def test_own_claims_held_count_apart_from_armed_and_busy_until_their_arming():
    """D456: an own claim made more than the claim-ahead before its instant has no process yet:
    counted by ``held`` (bounded by ``max_armed`` apart), neither armed nor running now."""
    w = worker_state()
    Executing._start(w, run("held", NOW + timedelta(seconds=1.4)), 1, None, 2, held=True)
    Executing._start(w, run("ahead", NOW + timedelta(seconds=0.5)), 2, None)
    w.claiming |= {"q1", "q2"}  # two own claims in flight: one to be held, one to be armed
    w._claiming_held.add("q1")
    w._claiming_ahead.add("q2")
    w._claim_cost.update(q1=3, q2=3)
    assert w.seating.held == {"held"} and w.seating.ahead == {"ahead"}
    assert Worker.held(w) == 2
    assert Worker.armed(w) == 2
    assert Worker.busy(w) == 0
    assert Worker.used_weight(w) == 0  # neither weighs on the runs now


def test_runs_waiting_for_their_completion_past_the_bound_leave_no_room_ahead():
    """D467: ended runs whose completion is not written yet hold no seat and no armed place;
    from ``capacity`` + ``max_armed`` of them on, there is no room ahead either."""
    w = worker_state()
    Executing._start(w, run("ahead", NOW + timedelta(seconds=0.5)), 1, None)
    w.finishing = {f"f{i}" for i in range(128 + 512 - 1)}
    assert Worker.armed(w) == 1
    w.finishing.add("one more")
    assert Worker.armed(w) == 512  # as if every armed place were taken
    assert Worker.held(w) == 512  # and every held place (D459)
