"""D282: a schedule whose every match falls in a spring-forward gap, under ``dst: {gap: skip}``,
never fires; searching for its next fire time used to cost ~1 s of CPU (gap after gap up to the
year 9998), on the event loop. Two roles could use it to stall a node: an editor saves a job with
it (the leader's planner searches it a dozen times per planning pass: 5-11 s per pass, every
node that leads after it), any signed-in user asks the cron preview for it (``dst_gap=skip``,
up to 50 fire times). The search now stops at its horizon and remembers what it found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cluster.cron import CronSchedule, DstPolicy, next_times, parse_schedule
from cluster.plan import plan_schedule

NOW = datetime(2026, 12, 6, 15, tzinfo=UTC)
GAP_ONLY = (
    ("0 30 2 8-14 3 */7", "America/New_York"),  # 2nd Sunday of March, 02:30: always in the gap
    ("0 30 2 25-31 3 */7", "Europe/Berlin"),  # last Sunday of March, 02:30
)


@pytest.fixture
def searches(monkeypatch):
    calls = {"n": 0}
    real = CronSchedule.next_match

    def counting(self, after):
        calls["n"] += 1
        return real(self, after)

    monkeypatch.setattr(CronSchedule, "next_match", counting)
    return calls


@pytest.mark.parametrize(("cron", "zone"), GAP_ONLY)
def test_the_planner_and_the_preview_stay_cheap_on_a_gap_only_schedule(searches, cron, zone):
    sched = parse_schedule(cron=cron, timezone=zone, hash_key="k", dst=DstPolicy.of("skip", None))
    assert next_times(sched, NOW, 50) == []  # the preview's question
    assert searches["n"] <= 410, searches  # one search: a gap a year up to the horizon
    searches["n"] = 0
    plan = plan_schedule(
        sched,
        last_tick=None,
        active_since=NOW - timedelta(days=30),
        now=NOW,
        catchup="latest",
        starting_deadline=0,
        limit=10,
    )
    assert plan.fire == [] and plan.next_due is None
    assert searches["n"] <= 100, searches  # the planner's searches reuse the first's finding


def test_what_the_search_remembers_hides_no_fire_time():
    """The remembered stretch is of gap matches only: the same expression under ``shift`` (a
    twin made after the finding) fires at each gap's end, and a schedule that matches outside
    gaps too is unaffected."""
    sched = parse_schedule(
        cron=GAP_ONLY[0][0], timezone=GAP_ONLY[0][1], dst=DstPolicy.of("skip", None)
    )
    assert sched.next_after(NOW) is None
    shifted = sched.with_dst(DstPolicy.of("shift", None))
    assert shifted.next_after(NOW) == datetime(2027, 3, 14, 7, 0, tzinfo=UTC)
    sundays = parse_schedule(
        cron="0 30 2 8-15 3 */7", timezone="America/New_York", dst=DstPolicy.of("skip", None)
    )
    # 2026: Mar 8 is the gap, Mar 15 is not
    start = datetime(2026, 3, 1, tzinfo=UTC)
    assert sundays.next_after(start) == datetime(2026, 3, 15, 6, 30, tzinfo=UTC)
