"""tests.chaos.overlap: the attempts of one run must be disjoint in time (plain values)."""

from __future__ import annotations

from tests.chaos.harness import Execution
from tests.chaos.overlap import check_overlaps


def ex(phase: str, run: str, rev: int, node: str, at: float) -> Execution:
    return Execution(phase, "job", "-", run, 1, rev, node, at)


def test_a_killed_attempt_ends_at_its_last_line_and_its_retry_starts_later() -> None:
    history = [
        ex("start", "r1", 10, "a", 100.0),
        ex("beat", "r1", 10, "a", 100.05),
        ex("beat", "r1", 10, "a", 100.10),  # killed here: no end line
        ex("start", "r1", 20, "b", 103.0),
        ex("end", "r1", 20, "b", 106.0),
        ex("start", "r2", 30, "a", 101.0),
        ex("end", "r2", 30, "a", 104.0),
    ]
    report = check_overlaps(history)
    assert report.ok and report.attempts == 3 and report.runs_with_retries == 1
    assert report.min_gap is not None and abs(report.min_gap - 2.9) < 1e-9


def test_a_stale_attempt_still_working_while_its_retry_runs_is_an_overlap() -> None:
    history = [
        ex("start", "r1", 10, "a", 100.0),
        ex("start", "r1", 20, "b", 103.0),
        ex("beat", "r1", 10, "a", 103.5),  # the frozen node's job kept going
        ex("end", "r1", 20, "b", 106.0),
    ]
    report = check_overlaps(history)
    assert not report.ok
    assert report.overlaps == ["r1: @10/a ran until 103.500, @20/b ran 103.000..106.000"]
    assert report.as_dict()["min_gap_s"] == -0.5
