"""Runs whose process has ended and whose end is still being recorded hold no place of
``capacity`` (D460), up to ``max(capacity, max_armed)`` of them: in a burst the next runs are
claimed as soon as processes exit, not when their completions have been written. On plain
values, as test_armed_bound.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from nodes.worker.attempt import Execution, Releases
from nodes.worker.capacity import Capacity
from nodes.worker.seating import Seating
from nodes.worker.worker import Worker

NOW = datetime(2026, 12, 7, 0, 0, 0, tzinfo=UTC)
CAPACITY = 4
MAX_ARMED = 6


def run(rid: str) -> Any:
    return SimpleNamespace(id=rid, not_before=None)


def worker_with(seating: Seating, executions: list[Execution]) -> Any:
    """The part of a Worker that ``busy`` and ``used_weight`` read."""
    return SimpleNamespace(
        running={ex.run.id: ex for ex in executions},
        seating=seating,
        claiming=set(),
        _claiming_ahead=set(),
        _claim_cost={},
        capacity=CAPACITY,
        max_armed=MAX_ARMED,
    )


def seating(ends: list[int]) -> Seating:
    return Seating(
        Capacity(CAPACITY), Releases(lambda: NOW), lambda: NOW, on_end=lambda: ends.append(1)
    )


def test_runs_whose_process_ended_do_not_fill_the_capacity():
    ends: list[int] = []
    s = seating(ends)
    held = [Execution(run(f"r{i}"), i, None) for i in range(CAPACITY)]
    w = worker_with(s, held)
    assert Worker.busy(w) == CAPACITY  # running: the node is full
    for ex in held[:3]:
        s.done(ex)  # their processes exited; their completions are being written
    assert ends == [1, 1, 1]  # each end wakes the dispatch
    # the run's recorded end is its process's, not its completion's (a next run claimed now
    # starts after it: records never show more than capacity runs at once)
    assert [ex.ended_at for ex in held] == [NOW, NOW, NOW, None]
    assert Worker.busy(w) == 1
    assert Worker.used_weight(w) == 1
    s.done(held[0])  # the exit callback and the end of the execution: counted once
    assert len(s.finishing) == 3 and ends == [1, 1, 1]
    s.forget(held[0])  # its end recorded
    assert s.finishing == {"r1", "r2"}


def test_finishing_runs_are_bounded_too():
    s = seating([])
    held = [Execution(run(f"r{i}"), i, None) for i in range(MAX_ARMED)]
    w = worker_with(s, held)
    for ex in held[:-1]:
        s.done(ex)
    assert Worker.busy(w) == 1  # one runs, five wait for their completions: room to claim
    s.done(held[-1])
    # nothing runs, but max_armed runs wait for their completions: no more claims
    assert Worker.busy(w) == CAPACITY
    s.forget(held[0])
    w.running.pop("r0")
    assert Worker.busy(w) == 0
    w.max_armed = 0  # arming off: capacity bounds what finishes
    for ex in held[1:CAPACITY]:
        s.forget(ex)
        w.running.pop(ex.run.id)
    assert len(s.finishing) == MAX_ARMED - CAPACITY < CAPACITY
    assert Worker.busy(w) == 0
    s.done(held[1])
    s.done(held[2])
    w.running.update({"r1": held[1], "r2": held[2]})
    assert Worker.busy(w) == CAPACITY


def test_an_execution_already_forgotten_is_not_counted_again():
    s = seating([])
    ex = Execution(run("late"), 1, None)
    ex.done.set()  # the worker forgot it; a late exit callback arrives (a kill on cancel)
    s.done(ex)
    assert s.finishing == set()


def test_the_seat_goes_back_when_the_process_ends():
    s = seating([])
    ex = Execution(run("r"), 1, None)

    async def take() -> bool:
        return await s.take(ex)

    assert asyncio.run(take())
    assert s.seats.used == 1
    s.done(ex)
    assert s.seats.used == 0 and s.finishing == {"r"}
