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


def swallowers(path) -> list[str]:
    """``asyncio.wait_for`` calls and ``suppress(...CancelledError...)`` blocks in ``path``."""
    found = []
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr == "wait_for":
            found.append(f"{name}:{node.lineno} wait_for")
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "suppress"
            and any(
                getattr(a, "attr", getattr(a, "id", None)) == "CancelledError" for a in node.args
            )
        ):
            found.append(f"{name}:{node.lineno} suppress(CancelledError)")
    return found


def test_the_product_never_swallows_a_cancel_by_construction():
    """``wait_for`` swallows a cancel arriving with the result on 3.11 (``cluster.waiting`` is
    the way to wait with a deadline); ``suppress(CancelledError)`` around awaiting a task one
    just cancelled also swallows a cancel of the awaiting task (``gather(task,
    return_exceptions=True)`` does not)."""
    found = [
        f
        for top in ("cluster", "nodes", "logstore")
        for p in sorted((ROOT / top).rglob("*.py"))
        for f in swallowers(p)
    ]
    assert found == [], found


def test_the_scan_finds_both_forms(tmp_path):
    bad = tmp_path / "sample.py"
    bad.write_text(
        "import asyncio, contextlib\n"
        "async def f(t):\n"
        "    await asyncio.wait_for(t, 1)\n"
        "    with contextlib.suppress(asyncio.CancelledError):\n"
        "        await t\n"
    )
    assert sorted(swallowers(bad)) == [
        "sample.py:3 wait_for",
        "sample.py:4 suppress(CancelledError)",
    ]
