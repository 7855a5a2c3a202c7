"""The ``cgroup-io`` threads take a run's spawn before the clean-ups waiting (D478): the two
lines of ``nodes.executor.ioline.IoLine`` in front of a real thread pool."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nodes.executor import launch
from nodes.executor.ioline import IoLine, io_line


def blocked_line() -> tuple[IoLine, ThreadPoolExecutor, threading.Event]:
    """A line in front of one thread, busy until the event is set."""
    pool = ThreadPoolExecutor(max_workers=1)
    gate = threading.Event()
    line = IoLine(pool)
    line.submit(gate.wait, 10)
    return line, pool, gate


def test_spawns_are_taken_before_the_work_queued_ahead_of_them() -> None:
    line, pool, gate = blocked_line()
    order: list[str] = []
    futs = [
        line.submit(order.append, "finish-1"),
        line.submit(order.append, "finish-2"),
        line.submit(order.append, "spawn-1", first=True),
        line.submit(order.append, "finish-3"),
        line.submit(order.append, "spawn-2", first=True),
    ]
    assert line.waiting() == (2, 3)
    gate.set()
    for f in futs:
        f.result(timeout=10)
    pool.shutdown()
    assert order == ["spawn-1", "spawn-2", "finish-1", "finish-2", "finish-3"]
    assert line.waiting() == (0, 0)


def test_results_errors_and_cancels_are_each_items_own() -> None:
    line, pool, gate = blocked_line()
    ran: list[int] = []
    dropped = line.submit(ran.append, 1)
    failed = line.submit(int, "x", first=True)
    fine = line.submit(sum, [1, 2])
    assert dropped.cancel()  # cancelled while it waited: never run
    gate.set()
    with pytest.raises(ValueError):
        failed.result(timeout=10)
    assert fine.result(timeout=10) == 3
    pool.shutdown()
    assert ran == [] and dropped.cancelled()


def test_a_runs_spawn_goes_first_and_its_clean_up_does_not(monkeypatch) -> None:
    """``launch`` hands a run's spawn to the first line and its clean-up to the other."""
    calls: list[tuple[str, bool]] = []

    class Spy:
        def submit(self, fn: Any, *args: Any, first: bool = False) -> Any:
            calls.append((fn.__name__, first))
            raise RuntimeError("spied")

    monkeypatch.setattr(launch, "io_line", Spy)

    async def spawn_then_finish() -> None:
        with pytest.raises(RuntimeError, match="spied"):
            await launch.start(
                ["true"],
                env={},
                folder=Path("/nonexistent"),
                uid=None,
                gid=None,
                pool=None,  # type: ignore[arg-type]
                limits={},
                on_output=lambda data: None,  # type: ignore[arg-type,return-value]
            )
        proc = SimpleNamespace(cgroup=object())
        with pytest.raises(RuntimeError, match="spied"):
            await launch.finish(None, proc, Path("/nonexistent"), 1)  # type: ignore[arg-type]

    asyncio.run(spawn_then_finish())
    assert calls == [("_spawn", True), ("_finish", False)]


def test_one_line_per_process() -> None:
    assert io_line() is io_line()
