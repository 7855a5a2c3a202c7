"""Runs whose process has ended and whose end is still being written hold no place of
``capacity`` (D460), up to ``capacity`` + ``max_armed`` of them (D467): in a burst the next runs
are claimed as soon as processes exit, not when their completions have been written. On plain
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
MAX_ARMED = 2


def run(rid: str) -> Any:
    return SimpleNamespace(id=rid, not_before=None)


def worker_with(executions: list[Execution]) -> Any:
    """The part of a Worker that ``busy``, ``used_weight`` and ``_ended`` read, with the
    Seating that calls it back when a process ends."""
    w = SimpleNamespace(
        running={ex.run.id: ex for ex in executions},
        finishing=set(),
        claiming=set(),
        _claiming_ahead=set(),
        _claiming_held=set(),
        _claim_cost={},
        capacity=CAPACITY,
        max_armed=MAX_ARMED,
        kicks=[],
    )
    w.kick = lambda: w.kicks.append(1)
    w.seating = Seating(
        Capacity(CAPACITY), Releases(lambda: NOW), lambda: NOW, lambda ex: Worker._ended(w, ex)
    )
    return w


def test_runs_whose_process_ended_do_not_fill_the_capacity():
    held = [Execution(run(f"r{i}"), i, None) for i in range(CAPACITY)]
    w = worker_with(held)
    assert Worker.busy(w) == CAPACITY  # running: the node is full
    for ex in held[:3]:
        w.seating.done(ex)  # their processes exited; their completions are being written
    assert w.kicks == [1, 1, 1]  # each end wakes the dispatch
    # the run's recorded end is its process's, not its completion's (a run claimed now starts
    # after it: the records never show more than capacity runs at once)
    assert [ex.ended_at for ex in held] == [NOW, NOW, NOW, None]
    assert Worker.busy(w) == 1
    assert Worker.used_weight(w) == 1
    w.seating.done(held[0])  # the exit callback and the end of the execution: counted once
    assert w.finishing == {"r0", "r1", "r2"} and w.kicks == [1, 1, 1]


def test_finishing_runs_are_bounded_too():
    held = [Execution(run(f"r{i}"), i, None) for i in range(CAPACITY + MAX_ARMED)]
    w = worker_with(held)
    for ex in held[:-1]:
        w.seating.done(ex)
    assert Worker.busy(w) == 1  # one runs, five wait for their completions: room to claim
    w.seating.done(held[-1])
    # nothing runs, but capacity + max_armed runs wait for their completions: no more claims
    assert Worker.busy(w) == CAPACITY
    w.finishing.discard("r0")  # its completion written
    w.running.pop("r0")
    assert Worker.busy(w) == 0


def test_an_execution_already_forgotten_is_not_counted_again():
    ex = Execution(run("late"), 1, None)
    w = worker_with([])
    ex.done.set()  # the worker forgot it; a late exit callback arrives (a kill on cancel)
    w.seating.done(ex)
    assert w.finishing == set() and w.kicks == []


def test_the_seat_goes_back_when_the_process_ends():
    ex = Execution(run("r"), 1, None)
    w = worker_with([ex])

    async def take() -> bool:
        return bool(await w.seating.take(ex))

    assert asyncio.run(take())
    assert w.seating.seats.used == 1
    w.seating.done(ex)
    assert w.seating.seats.used == 0 and w.finishing == {"r"}
