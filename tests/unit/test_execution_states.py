"""``nodes.worker.attempt.states``: where each execution is, as ``cronmesh_executions`` counts it
(D465). An armed execution past its instant is in line for a seat until it holds one; a running
one whose process has ended is ``exited`` until its tree and output are settled."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from nodes.worker.attempt import STATES, states


def ex(phase: str, *, seat: Any = None, exited: bool | None = None) -> Any:
    proc = None if exited is None else SimpleNamespace(returncode_ready=exited)
    return SimpleNamespace(phase=phase, seat=seat, proc=proc)


@pytest.mark.parametrize(
    ("execution", "state"),
    [
        (ex("starting"), "starting"),
        (ex("spawning"), "spawning"),
        (ex("armed", exited=False), "armed"),  # held for its instant
        (ex("armed", seat=SimpleNamespace(held=False), exited=False), "seat"),  # due, in line
        (ex("armed", seat=SimpleNamespace(held=True), exited=False), "running"),  # released
        (ex("seat"), "seat"),
        (ex("running", exited=False), "running"),
        (ex("running", exited=True), "exited"),
        (ex("cleanup", exited=True), "cleanup"),
        (ex("completing", exited=True), "completing"),
    ],
)
def test_each_execution_is_counted_in_its_state(execution: Any, state: str) -> None:
    assert state in STATES
    assert states([execution]) == {state: 1}


def test_the_counts_add_up() -> None:
    held = [ex("running", exited=False)] * 3 + [ex("completing", exited=True)] * 2
    assert states(held) == {"running": 3, "completing": 2}
    assert states([]) == {}
