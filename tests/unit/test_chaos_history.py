"""The chaos history checker: executions (fencing tokens) against the attempts etcd committed."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.chaos.checker import check
from tests.chaos.harness import Execution, check_history, history_command, read_history


def ex(phase: str, run: str, rev: int, node: str = "n1", tick: str = "T1") -> Execution:
    return Execution(phase, "j", tick, run, 1, rev, node, 0.0)


def run(rid: str, *attempts: tuple[str, int], tick: str = "T1", retries: int = 0) -> dict:
    return {
        "id": rid,
        "scheduled_at": tick,
        "snapshot": {"retries": retries},
        "attempts": [
            {"attempt": i + 1, "status": s, "claim_revision": r}
            for i, (s, r) in enumerate(attempts)
        ],
    }


def test_clean_history_is_ok_and_counts_executions():
    hist = [ex("start", "r1", 10), ex("end", "r1", 10)]
    report = check_history([run("r1", ("succeeded", 10))], hist)
    assert report.ok and report.executions == 1 and report.committed_successes == 1
    assert report.stale == [] and report.executed_twice == {}


def test_stale_execution_is_fenced_not_a_duplicate():
    # The first worker lost its claim (lost attempt, claim 10) yet its process finished; the
    # retry on n2 (claim 20) committed. The stale execution is reported, not counted as a success.
    hist = [
        ex("start", "r1", 10),
        ex("start", "r1", 20, "n2"),
        ex("end", "r1", 20, "n2"),
        ex("end", "r1", 10),
    ]
    report = check_history([run("r1", ("lost", 10), ("succeeded", 20))], hist)
    assert report.ok and report.duplicates == {}
    assert report.executed_twice == {}  # the lost attempt was retried by policy
    assert report.stale == ["r1@10/n1"]  # it committed nothing itself: the leader said "lost"
    assert report.fenced == ["r1@10/n1"]  # and it ran to its end: its result was refused
    # Without a committed lost attempt the second execution is unexplained.
    report = check_history([run("r1", ("failed", 10), ("succeeded", 20))], hist)
    assert report.executed_twice == {"T1": ["r1@10/n1", "r1@20/n2"]}
    assert not report.ok
    # An execution whose claim etcd never recorded at all is stale.
    report = check_history([run("r1", ("succeeded", 20))], hist)
    assert report.stale == ["r1@10/n1"]


def test_two_committed_successes_for_one_tick_are_duplicates():
    hist = [ex("start", "r1", 10), ex("end", "r1", 10), ex("start", "r2", 11), ex("end", "r2", 11)]
    report = check_history([run("r1", ("succeeded", 10)), run("r2", ("succeeded", 11))], hist)
    assert not report.ok
    assert report.duplicates == {"T1": ["r1@10", "r2@11"]}


def test_success_committed_without_a_finished_execution_is_a_phantom():
    report = check_history([run("r1", ("succeeded", 10))], [ex("start", "r1", 10)])
    assert not report.ok and report.phantoms == ["r1@10"]


def test_history_command_lines_parse(tmp_path: Path):
    path = tmp_path / "h"
    env = dict(
        os.environ,
        CRONMESH_JOB="j",
        CRONMESH_SCHEDULED_AT="2026-01-01T00:00:01Z",
        CRONMESH_RUN_ID="r1",
        CRONMESH_ATTEMPT="2",
        CRONMESH_CLAIM_REVISION="42",
        CRONMESH_NODE="n3",
    )
    subprocess.run(["/bin/sh", "-c", history_command(path)], env=env, check=True)
    lines = read_history(path)
    assert [(e.phase, e.tick, e.run, e.attempt, e.claim_revision, e.node) for e in lines] == [
        ("start", "2026-01-01T00:00:01Z", "r1", 2, 42, "n3"),
        ("end", "2026-01-01T00:00:01Z", "r1", 2, 42, "n3"),
    ]
    assert lines[0].at <= lines[1].at


def test_a_tick_executed_twice_with_one_execution_fenced_is_not_ok():
    """Issue 25: the second execution committed nothing (fenced), and nothing explains it (no
    attempt was lost or retried): the tick ran twice, and the report must say so."""
    hist = [
        ex("start", "r1", 10),
        ex("start", "r1", 11, "n2"),
        ex("end", "r1", 11, "n2"),
        ex("end", "r1", 10),
    ]
    report = check_history([run("r1", ("succeeded", 10))], hist)
    assert report.duplicates == {} and report.phantoms == []
    assert report.executed_twice == {"T1": ["r1@10/n1", "r1@11/n2"]}
    assert report.fenced == ["r1@11/n2"]
    assert not report.ok and report.as_dict()["ok"] is False


def test_a_failed_attempt_retried_by_policy_is_not_executed_twice():
    hist = [ex("start", "r1", 10), ex("end", "r1", 10), ex("start", "r1", 20), ex("end", "r1", 20)]
    report = check_history([run("r1", ("failed", 10), ("succeeded", 20), retries=1)], hist)
    assert report.ok and report.executed_twice == {} and report.fenced == []


def test_a_killed_stale_execution_is_stale_not_fenced():
    # attempt 1's node died with it: started, never ended, recorded lost by the leader
    hist = [ex("start", "r1", 10), ex("start", "r1", 20, "n2"), ex("end", "r1", 20, "n2")]
    report = check_history([run("r1", ("lost", 10), ("succeeded", 20))], hist)
    assert report.ok and report.stale == ["r1@10/n1"] and report.fenced == []


def test_the_same_instant_with_another_utc_offset_is_the_same_tick():
    hist = [
        ex("start", "r1", 10, tick="2026-01-01T00:00:01Z"),
        ex("end", "r1", 10, tick="2026-01-01T00:00:01Z"),
        ex("start", "r2", 11, tick="2026-01-01T01:00:01+01:00"),
        ex("end", "r2", 11, tick="2026-01-01T01:00:01+01:00"),
    ]
    runs = [
        run("r1", ("succeeded", 10), tick="2026-01-01T00:00:01+00:00"),
        run("r2", ("succeeded", 11), tick="2026-01-01T01:00:01+01:00"),
    ]
    report = check_history(runs, hist)
    assert list(report.duplicates) == ["2026-01-01T00:00:01+00:00"]
    assert list(report.executed_twice) == ["2026-01-01T00:00:01+00:00"]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ticks = check(
        [{"id": r["id"], "scheduled_at": r["scheduled_at"], "status": "succeeded"} for r in runs],
        "* * * * * *",
        start,
        start + timedelta(seconds=1),
    )
    assert ticks.duplicates == {"2026-01-01T00:00:01+00:00": ["r1", "r2"]}
    assert ticks.missed == [] and not ticks.ok
