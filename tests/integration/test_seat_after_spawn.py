"""A run due now is spawned held before it takes its seat, and released once seated (D471).

A saturated node's due runs used to take their seat first and then wait in the ``cgroup-io``
threads' line for their spawn (behind the armed spawns and the clean-ups: 0.4-0.5 s at 600
runs/s offered), holding the seat all along; ``capacity`` seats then turned over at the line's
pace. Now the seat is taken once the process exists, held on its stdin as an armed one is: the
command still runs only with a seat (``capacity`` bounds what runs), and a run cancelled while
it waits for one never runs its command.
"""

from __future__ import annotations

import pytest

from tests.conftest import wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"


async def _seat_taken_by_the_test(cluster, tmp_path):
    """A node with one seat, that seat held by the test; a job that leaves a mark when its
    command runs; its run claimed (the node is not full by its count), waiting for the seat."""
    node = await cluster.start(capacity=1)
    worker = node.worker
    assert worker is not None
    pool = node.containment.pool if node.containment is not None else None
    if pool is None:
        pytest.skip("no cgroup pool on this machine: spawns stay on the loop, seat first")
    seat = worker.seating.seats.take(1, lambda: None)
    assert seat.held
    mark = tmp_path / "ran"
    status, body = await cluster.request("PUT", f"{JOBS}/marks", json={"command": f"touch {mark}"})
    assert status in (200, 201), body
    status, run = await cluster.request("POST", f"{JOBS}/marks/runs", json={})
    assert status == 201, run

    def waiting():
        ex = worker.running.get(run["id"])
        return ex is not None and ex.phase == "seat" and ex.seat is not None and ex

    ex = await wait_for(waiting, 30, 0.02, "the run waiting for a seat")
    return worker, seat, mark, run, ex


async def test_a_run_due_now_waits_for_its_seat_spawned_and_held(cluster, tmp_path):
    worker, seat, mark, run, ex = await _seat_taken_by_the_test(cluster, tmp_path)
    # its process exists already (before D471: none until it was seated), held: no command ran
    assert ex.proc is not None and ex.proc.held and not ex.proc.returncode_ready
    assert not ex.seat.held and not mark.exists()
    seat.give_back()  # the seat comes back: the run takes it and is released at once

    async def succeeded():
        status, body = await cluster.request("GET", f"{RUNS}/{run['id']}")
        return status == 200 and body["status"] == "succeeded" and body

    done = await wait_for(succeeded, 30, 0.05, "the run succeeded")
    assert mark.exists() and done["exit_code"] == 0


async def test_a_run_cancelled_while_it_waits_for_its_seat_never_runs(cluster, tmp_path):
    worker, seat, mark, run, ex = await _seat_taken_by_the_test(cluster, tmp_path)
    assert ex.proc is not None and ex.proc.held
    status, _ = await cluster.request("POST", f"{RUNS}/{run['id']}/cancel")
    assert status == 202

    async def cancelled():
        status, body = await cluster.request("GET", f"{RUNS}/{run['id']}")
        return status == 200 and body["status"] == "cancelled" and body

    done = await wait_for(cancelled, 30, 0.05, "the run cancelled")
    assert "before it started" in done["error"], done
    assert ex.proc.returncode_ready  # its held process ended without running anything
    assert not mark.exists()
    assert worker.seating.seats.used == 1  # only the test's seat: the run took none
    seat.give_back()
