"""The schedule simulator (cluster.simulate): exact slots after time zone, DST, H, calendars
and windows; starts per minute per group; crowd warnings; bounded output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cluster.blackouts import Window, WindowSpec
from cluster.calendars import Calendar, CalendarSpec
from cluster.models import Job, JobSpec
from cluster.simulate import simulate
from cluster.slotrules import SlotRules

T0 = datetime(2026, 3, 28, 23, tzinfo=UTC)


def job(name: str, *schedules: dict[str, Any], **kw: Any) -> Job:
    spec = JobSpec(name=name, command="true", schedules=list(schedules), **kw)
    return Job(**spec.model_dump(), project="p", created_at=T0, updated_at=T0, active_since=T0)


def test_dst_gap_and_zone_are_the_engines() -> None:
    # Europe/Paris springs forward on 2026-03-29 at 02:00: a 02:30 job fires at 03:00 local
    j = job("a", {"cron": "30 2 * * *", "timezone": "Europe/Paris"})
    sim = simulate([j], SlotRules(), T0, T0 + timedelta(days=2))
    assert [s["tick"] for s in sim.slots] == [
        "2026-03-29T01:00:00+00:00",
        "2026-03-30T00:30:00+00:00",
    ]


def test_crowded_second_warns_and_h_spreads() -> None:
    crowd = [job(f"j{i}", {"cron": "0 * * * *"}, target={"group": "etl"}) for i in range(6)]
    spread = [job(f"h{i}", {"cron": "H * * * *"}, target={"group": "etl"}) for i in range(6)]
    sim = simulate(crowd, SlotRules(), T0, T0 + timedelta(hours=1))
    [warning] = sim.warnings
    assert warning["group"] == "etl" and warning["jobs"] == 6 and "H" in warning["hint"]
    assert sim.per_minute == {"etl": {"2026-03-29T00:00:00+00:00": 6}}
    sim = simulate(spread, SlotRules(), T0, T0 + timedelta(hours=1))
    assert sim.warnings == [] and len(sim.slots) == 6
    assert len({s["tick"] for s in sim.slots}) > 1  # H picked different minutes


def test_calendar_and_window_outcomes_and_the_deferred_start() -> None:
    cal = Calendar(CalendarSpec(name="hol", dates=["2026-03-30"]))
    win = Window(
        WindowSpec.model_validate(
            {
                "name": "w",
                "start": "2026-03-31T00:00:00Z",
                "end": "2026-03-31T06:00:00Z",
                "action": "defer",
            }
        ),
        "p",
    )
    rules = SlotRules(calendars={"p": {"hol": cal}}, windows={"p": {"w": win}})
    j = job("a", {"cron": "0 1 * * *", "calendar": {"skip": ["hol"]}})
    sim = simulate([j], rules, T0, T0 + timedelta(days=3))
    got = [(s["tick"][:10], s["outcome"], s.get("reason")) for s in sim.slots]
    assert got == [
        ("2026-03-29", "fire", None),
        ("2026-03-30", "skip", "skipped_calendar"),
        ("2026-03-31", "defer", "deferred"),
    ]
    assert sim.slots[2]["deferred_to"] == "2026-03-31T06:00:00+00:00"
    assert sim.per_minute["*"] == {
        "2026-03-29T01:00:00+00:00": 1,
        "2026-03-31T06:00:00+00:00": 1,
    }
    assert sim.counts == {"fire": 1, "skipped_calendar": 1, "deferred": 1}


def test_output_is_capped_and_keeps_the_earliest() -> None:
    jobs = [job(f"j{i}", {"cron": "* * * * * *"}) for i in range(3)]
    sim = simulate(jobs, SlotRules(), T0, T0 + timedelta(minutes=10), limit=100)
    assert sim.truncated and len(sim.slots) == 100
    assert sim.slots[0]["tick"] == (T0 + timedelta(seconds=1)).isoformat()
    assert sim.slots[-1]["tick"] == (T0 + timedelta(seconds=34)).isoformat()
    assert sum(sum(m.values()) for m in sim.per_minute.values()) == 3 * 600  # all counted
