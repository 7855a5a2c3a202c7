"""`cronmesh dev`'s restart policy and the notices it prints (pure, plain values; D244)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodes.cli.devsupervisor import LogTail, Restarts, describe_exit, drain_notice


def test_a_node_that_ran_a_while_is_restarted_after_the_base_delay_every_time():
    r = Restarts(base=3, cap=60, stable_after=30, max_quick=5)
    assert [r.on_exit(300) for _ in range(20)] == [3.0] * 20


def test_crashes_at_start_back_off_then_the_node_is_given_up():
    r = Restarts(base=3, cap=20, stable_after=30, max_quick=5)
    assert [r.on_exit(1) for _ in range(6)] == [3.0, 6.0, 12.0, 20.0, 20.0, None]


def test_a_stable_run_resets_the_backoff():
    r = Restarts(base=2, cap=60, stable_after=30, max_quick=3)
    assert [r.on_exit(1), r.on_exit(1), r.on_exit(1)] == [2.0, 4.0, 8.0]
    assert r.on_exit(31) == 2.0
    assert r.on_exit(1) == 4.0


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (2, "exit code 2"),
        (0, "exit code 0"),
        (-200, "killed by signal 200"),
    ],
)
def test_describe_exit(code: int, text: str):
    assert describe_exit(code) == text


def test_drain_notices_name_the_runs_and_the_time_left():
    n = drain_notice({"event": "draining", "running": 2, "jobs": ["default/a", "x/b"], "left": 27})
    assert n is not None and "2 run(s)" in n and "default/a, x/b" in n and "27 s left" in n
    assert "Ctrl-C again" in n
    n = drain_notice({"event": "draining", "running": 1, "jobs": ["a/b"], "left": 3}, hint=False)
    assert n == "waiting for 1 run(s) to finish (a/b): 3 s left"
    assert drain_notice({"event": "run finished"}) is None


def test_log_tail_reads_only_new_complete_lines(tmp_path: Path):
    log = tmp_path / "node.log"
    log.write_text(json.dumps({"event": "old"}) + "\n")
    tail = LogTail(log)
    assert tail.lines() == []
    with open(log, "a") as f:
        f.write(json.dumps({"event": "draining", "left": 5}) + '\nnot json\n{"event": "half')
    assert tail.lines() == [{"event": "draining", "left": 5}]
    with open(log, "a") as f:
        f.write('"}\n')
    assert tail.lines() == [{"event": "half"}]


def test_busy_ports_names_the_ports_in_use():
    import socket

    from nodes.cli.devsupervisor import busy_ports
    from nodes.devtools.embedded import free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        used = taken.getsockname()[1]
        free = free_port()
        assert busy_ports([used, free]) == [used]


P = "/cronmesh/election"


def etcdctl_out(*kvs: tuple[str, str]) -> str:
    return "".join(f"{k}\n{v}\n" for k, v in kvs)


def test_leaders_of_every_shard_from_etcdctl_output() -> None:
    from nodes.cli.devsupervisor import parse_leaders

    out = etcdctl_out(
        (f"{P}/scheduler/a1", "node-2"),  # oldest candidacy of shard 0: its leader
        (f"{P}/scheduler-2/b1", "node-3"),
        (f"{P}/scheduler/a2", "node-1"),  # queued behind node-2
        (f"{P}/scheduler-1/c1", "node-1"),
        (f"{P}/scheduler-x/d1", "node-9"),  # not a shard election
        (f"{P}/other/e1", "node-9"),
    )
    assert parse_leaders(out, "/cronmesh") == {
        0: ("node-2", f"{P}/scheduler/a1"),
        1: ("node-1", f"{P}/scheduler-1/c1"),
        2: ("node-3", f"{P}/scheduler-2/b1"),
    }


def test_news_after_a_node_left_is_read_against_the_leaders_when_it_left() -> None:
    """`cronmesh dev` said "leader: X (was Y)" from a view kept since start: stale after a
    change of K, and silent about the other shards (the fresh-clone walk of stop 29)."""
    from nodes.cli.devsupervisor import leader_news, settled

    before = {0: ("node-1", "k0"), 1: ("node-3", "k1"), 2: ("node-3", "k2")}
    # node-3's keys stay until its lease expires: not settled yet
    assert not settled(before, before, "node-3")
    moved = {0: ("node-1", "k0"), 1: ("node-2", "k5"), 2: ("node-1", "k6")}
    assert settled(before, moved, "node-3")
    assert leader_news(before, moved) == (
        "shard leaders: 0 node-1, 1 node-2, 2 node-1 (moved: 1 node-3 → node-2, 2 node-3 → node-1)"
    )
    # node-3 restarted and took shard 2 back under a new candidacy: settled too
    back = {0: ("node-1", "k0"), 1: ("node-2", "k5"), 2: ("node-3", "k9")}
    assert settled(before, back, "node-3")
    # one shard (K = 1): the old wording, which the supervisor test and the docs show
    assert (
        leader_news({0: ("node-1", "k0")}, {0: ("node-2", "k3")}) == "leader: node-2 (was node-1)"
    )
    assert leader_news({0: ("node-1", "k0")}, {0: ("node-1", "k0")}) == "leader: still node-1"
    assert not settled({0: ("node-1", "k0")}, {}, "node-1")  # nobody leads yet
