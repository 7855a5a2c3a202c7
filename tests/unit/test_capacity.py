"""The seats that bound what a node runs (D260): a run waits in line when ``capacity`` runs (or
the weight budget) are taken, first come first served, and a seat given back goes to the head
of the line at once; leaving the line, or giving back twice, changes nothing else."""

from __future__ import annotations

from nodes.worker.capacity import Capacity


def test_capacity_bounds_the_seats_held_and_the_line_is_served_in_order() -> None:
    cap = Capacity(2)
    started: list[str] = []
    seats = {name: cap.take(1, lambda n=name: started.append(n)) for name in "abcd"}
    assert started == ["a", "b"] and cap.used == 2 and cap.waiting == 2
    seats["a"].give_back()
    assert started == ["a", "b", "c"] and cap.used == 2 and cap.waiting == 1
    seats["a"].give_back()  # idempotent: no second seat freed
    assert started == ["a", "b", "c"] and cap.used == 2
    seats["d"].give_back()  # leaves the line (a cancel while waiting)
    assert cap.waiting == 0
    seats["b"].give_back()
    seats["c"].give_back()
    assert started == ["a", "b", "c"] and cap.used == 0 and cap.weight == 0


def test_a_newcomer_never_jumps_the_line() -> None:
    cap = Capacity(1)
    started: list[str] = []
    a = cap.take(1, lambda: started.append("a"))
    cap.take(1, lambda: started.append("b"))
    a.give_back()
    cap.take(1, lambda: started.append("c"))  # b holds the seat now; c waits behind nobody
    assert started == ["a", "b"] and cap.waiting == 1


def test_weight_budget_bounds_the_weight_held_and_a_heavy_run_still_runs_alone() -> None:
    cap = Capacity(10, weight_budget=5)
    started: list[str] = []
    light = cap.take(3, lambda: started.append("light"))
    cap.take(3, lambda: started.append("second"))  # 6 > 5: waits
    assert started == ["light"]
    light.give_back()
    assert started == ["light", "second"] and cap.weight == 3
    empty = Capacity(10, weight_budget=5)
    heavy = empty.take(9, lambda: started.append("heavy"))  # more than the budget: alone
    assert heavy.held and started[-1] == "heavy"
    empty.take(1, lambda: started.append("after"))
    assert started[-1] == "heavy"
    heavy.give_back()
    assert started[-1] == "after"


def test_the_default_capacity_is_64_per_cpu_within_the_cgroup_quota(tmp_path) -> None:
    """D261: 64 runs per usable CPU, the cgroup's CPU quota counted (v2 and v1), 16 at least."""
    import os

    from nodes.worker.capacity import cpu_quota, default_capacity

    cpus = len(os.sched_getaffinity(0))
    assert cpu_quota(str(tmp_path)) is None  # nothing readable: the affinity alone
    assert default_capacity(str(tmp_path)) == max(16, min(1024, 64 * cpus))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(str(tmp_path)) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: counted as 2
    assert cpu_quota(str(tmp_path)) == 1.5
    assert default_capacity(str(tmp_path)) == max(16, 64 * min(cpus, 2))
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("10000\n")  # a tenth of a CPU (v1)
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert default_capacity(str(tmp_path)) == 64
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(str(tmp_path)) is None
