"""Review of the calendars branch (D287): the plan's work bound counts the windows a slot is
asked about. With 100 recurring windows (a project editor's allowance) each slot cost ~1.6 ms
(every window steps its own cron afresh for each job's walk), so the 50 000 slots a plan may
compute took ~80 s of a node's CPU per call, which any viewer of the project could ask for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cluster.blackouts import Window, WindowSpec
from cluster.models import Job, JobSpec
from cluster.simulate import MAX_WORK, simulate
from cluster.slotrules import SlotRules

T0 = datetime(2026, 12, 7, tzinfo=UTC)


def _job(name: str, cron: str) -> Job:
    spec = JobSpec(name=name, command="true", schedules=[{"cron": cron}])
    return Job(**spec.model_dump(), project="p", created_at=T0, updated_at=T0, active_since=T0)


def _windows(n: int) -> SlotRules:
    rules = SlotRules()
    rules.windows["p"] = {
        f"w{i}": Window(WindowSpec(name=f"w{i}", cron="*/2 * * * *", duration="30s"), "p")
        for i in range(n)
    }
    return rules


def test_windows_count_in_the_plans_work():
    jobs = [_job(f"j{i}", "1-59/2 * * * *") for i in range(10)]  # odd minutes: never covered
    sim = simulate(jobs, _windows(100), T0, T0 + timedelta(days=1))
    computed = sum(sim.counts.values())
    assert sim.truncated
    assert computed * 101 <= MAX_WORK + 101, computed  # was 7200 slots, ~11 s
    assert sim.counts == {"fire": computed}


def test_without_windows_a_slot_is_one_unit():
    jobs = [_job(f"j{i}", "* * * * *") for i in range(40)]
    sim = simulate(jobs, SlotRules(), T0, T0 + timedelta(days=1))
    assert sum(sim.counts.values()) == MAX_WORK and sim.truncated
