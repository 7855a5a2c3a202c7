"""Per-run uids (D205): the pure choice and the node's pool, with the /proc scan injected."""

from __future__ import annotations

import os

import pytest

from cluster.errors import InvalidInput
from cluster.runuids import check_range, choose_uid
from nodes.config import NodeConfig
from nodes.executor.runas import RunUids, uids_in_use


@pytest.mark.parametrize(
    ("lo", "hi", "after", "taken", "expect"),
    [
        (100, 104, None, set(), 100),
        (100, 104, 100, set(), 101),  # rotates: never the one just given
        (100, 104, 104, set(), 100),  # wraps round
        (100, 104, 101, {102, 103}, 104),
        (100, 104, 103, {104, 100}, 101),
        (100, 104, 50, set(), 100),  # an "after" outside the range: from the start
        (100, 100, 100, set(), 100),  # one uid: the same again once free
        (100, 102, None, {100, 101, 102}, None),  # full
    ],
)
def test_choose_uid(lo, hi, after, taken, expect):
    assert choose_uid(lo, hi, after, taken) == expect


def test_ranges():
    assert check_range(61184, 65519) is None
    assert check_range(0, 10) is not None  # root's uid
    assert check_range(5000, 4000) is not None
    assert check_range(1000, 2**31) is not None
    assert NodeConfig(node_id="n", run_uid_range="70000-70009").run_uid_range == (70000, 70009)
    with pytest.raises(ValueError, match="run_uid_range"):
        NodeConfig(node_id="n", run_uid_range="10-20")
    with pytest.raises(ValueError, match="run_uid_range"):
        NodeConfig(node_id="n", run_uid_range="70000")
    with pytest.raises(InvalidInput):
        RunUids(3, 2, lock_dir=None)


def test_live_runs_never_share_a_uid_and_a_uid_comes_back_only_after_its_run():
    scans: list[int] = []
    held: set[int] = {70001}  # a process an earlier node left holds 70001

    def in_use(lo: int, hi: int) -> set[int]:
        scans.append(lo)
        return set(held)

    pool = RunUids(70000, 70003, in_use, lock_dir=None)
    a, b = pool.acquire(), pool.acquire()
    assert (a, b) == (70000, 70002)  # 70001 is held
    c = pool.acquire()
    assert c == 70003
    with pytest.raises(LookupError, match="every uid"):
        pool.acquire()  # three live runs, one held uid: nothing free (a scan happened)
    pool.release(b)
    assert pool.acquire() == 70002  # the only free one, after its run ended
    held.clear()  # the leftover process is gone: the next scan frees 70001
    pool.release(a)
    assert pool.acquire() in (70000, 70001)
    assert len(pool.live) == 3 and len(set(pool.live)) == 3


def test_a_uid_whose_process_may_live_stays_out_until_a_scan_frees_it():
    held: set[int] = set()
    pool = RunUids(70000, 70001, lambda lo, hi: set(held), lock_dir=None)
    a = pool.acquire()
    held.add(a)  # the run's wait was cancelled: its process may live on
    pool.release(a, over=False)
    b = pool.acquire()
    assert b != a
    pool.release(b)
    assert pool.acquire() == b  # a is still held at the rescan
    held.clear()
    pool.release(b)
    assert pool.acquire() == a


def test_the_scan_sees_live_processes_and_passwd_entries():
    me = os.getuid()
    got = uids_in_use(me, me)
    assert got == {me}  # this process (and its passwd entry)
    assert uids_in_use(2**31 - 100, 2**31 - 90) == set()


def test_nodes_sharing_a_machine_never_give_one_uid_to_two_live_runs(tmp_path):
    """Two nodes on one machine (cronmesh dev, tests) share the range: the per-uid lock keeps
    their live runs apart, and a uid one node gave back is free for the other."""
    one = RunUids(70000, 70002, lambda lo, hi: set(), lock_dir=tmp_path)
    two = RunUids(70000, 70002, lambda lo, hi: set(), lock_dir=tmp_path)
    a, b = one.acquire(), two.acquire()
    c = one.acquire()
    assert len({a, b, c}) == 3
    with pytest.raises(LookupError):
        two.acquire()
    one.release(a)
    assert two.acquire() == a
    # a run whose process may live on keeps its lock until a scan finds the uid free
    one.release(c, over=False)
    two.release(b)
    assert two.acquire() == b  # c is still locked by one
    two.release(b)
    two.release(a)
    one.acquire()  # one's rotation wraps: the scan finds no process of c, its lock goes
    assert c not in one._stuck
