"""A wait with a deadline never loses a cancel (D420).

CI at stop 32: a node's shutdown cancelled its leader in the same loop iteration as a watch event
woke the dependency waits' due queue; ``asyncio.wait_for`` (Python 3.11) returned the event
instead of raising, the queue's loop went on, and the node did not stop for 30 s."""

from __future__ import annotations

import ast
import asyncio
from datetime import UTC, datetime

import pytest

from cluster.waiting import within, woken
from nodes.leader.loops import DueQueue
from tests.conftest import ROOT


async def cancel_as_it_wakes(wait, wake, settle: int) -> str:
    """A loop around ``wait`` (as the leader's loops are); ``wake`` it, cancel it ``settle``
    iterations later: the loop must end cancelled, not wait on for ever."""

    async def loop() -> None:
        while True:
            await wait()
            await asyncio.sleep(0.01)  # work between waits (a set event answers at once)

    task = asyncio.ensure_future(loop())
    for _ in range(3):
        await asyncio.sleep(0)
    wake()
    for _ in range(settle):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    if not done:
        task.cancel()  # the cancel was lost: end it for good
        await asyncio.gather(task, return_exceptions=True)
        return "went on"
    return "cancelled" if task.cancelled() else repr(task.exception())


@pytest.mark.parametrize("settle", [0, 1, 2, 3])
async def test_woken_and_within_raise_the_cancel_that_arrives_with_the_wake(settle):
    ev = asyncio.Event()
    assert await cancel_as_it_wakes(lambda: woken(ev, 10), ev.set, settle) == "cancelled"
    assert await cancel_as_it_wakes(lambda: within(ev.wait(), 10), ev.set, settle) == "cancelled"


@pytest.mark.parametrize("settle", [0, 1, 2])
async def test_a_due_queue_wait_cancelled_as_a_key_is_set_is_cancelled(settle):
    q: DueQueue[str] = DueQueue(lambda: datetime(2026, 12, 7, tzinfo=UTC))
    wake = lambda: q.set("job", datetime(2026, 12, 8, tzinfo=UTC))  # noqa: E731
    assert await cancel_as_it_wakes(q.wait, wake, settle) == "cancelled"


async def test_woken_answers_set_or_deadline_and_within_times_out():
    ev = asyncio.Event()
    assert await woken(ev, 0.01) is False
    ev.set()
    assert await woken(ev, 0.01) is True
    with pytest.raises(TimeoutError):
        await within(asyncio.Event().wait(), 0.01)
    assert await within(asyncio.sleep(0, "x"), None) == "x"


def test_the_product_never_calls_asyncio_wait_for():
    """It swallows a cancel on 3.11: ``cluster.waiting`` is the way to wait with a deadline."""
    found = []
    for top in ("cluster", "nodes", "logstore"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "wait_for":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == [], found
