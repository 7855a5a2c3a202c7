"""Pure scheduling decisions, tested with plain values and an explicit `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cluster.cron import parse_schedule
from cluster.plan import overlap_action, plan_schedule, retry_delay, slot_limit

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
EVERY_MIN = parse_schedule(cron="* * * * *")
EVERY_SEC = parse_schedule(cron="* * * * * *")


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def plan(
    sched=EVERY_MIN,
    *,
    last=None,
    since=T0 - timedelta(days=1),
    now,
    catchup="latest",
    deadline=0,
    limit=100,
):
    return plan_schedule(
        sched,
        last_tick=last,
        active_since=since,
        now=now,
        catchup=catchup,
        starting_deadline=deadline,
        limit=limit,
    )


def test_on_time_tick_fires_once_and_advances():
    p = plan(last=at(-1), now=at(0, 0.005))
    assert p.fire == [(at(0), "schedule")]
    assert p.missed is None
    assert p.last_tick == at(0)
    assert p.next_due == at(1)
    # Planning again at the same instant with the new state fires nothing.
    again = plan(last=p.last_tick, now=at(0, 0.005))
    assert again.fire == [] and again.last_tick == at(0)


def test_nothing_due_reports_next_wakeup():
    p = plan(last=at(0), now=at(0, 30))
    assert p.fire == [] and p.missed is None and p.next_due == at(1)


@pytest.mark.parametrize(
    ("catchup", "fired", "missed"),
    [
        ("none", 0, 10),
        ("latest", 1, 9),
        ("all", 10, 0),
    ],
)
def test_ten_minutes_of_downtime(catchup, fired, missed):
    # Last handled tick 12:00; the cluster was down until 12:10:30 (ticks 12:01..12:10 due).
    p = plan(last=at(0), now=at(10, 30), catchup=catchup)
    assert len(p.fire) == fired
    assert (p.missed.count if p.missed else 0) == missed
    assert all(src == "catch-up" for _, src in p.fire)
    assert p.last_tick == at(10)
    if catchup == "latest":
        assert p.fire[0][0] == at(10)
    if catchup == "all":
        assert [t for t, _ in p.fire] == [at(m) for m in range(1, 11)]


def test_starting_deadline_turns_old_ticks_into_misses():
    p = plan(last=at(0), now=at(10, 30), catchup="all", deadline=120)
    # Only ticks within 120 s of now (12:08:30 .. 12:10:30): 12:09 and 12:10.
    assert [t for t, _ in p.fire] == [at(9), at(10)]
    assert p.missed is not None and p.missed.count == 8
    latest = plan(last=at(0), now=at(10, 30), catchup="latest", deadline=20)
    assert latest.fire == [] and latest.missed is not None and latest.missed.count == 10


def test_all_is_bounded_by_limit_keeping_newest():
    p = plan(last=at(0), now=at(10, 30), catchup="all", limit=3)
    assert [t for t, _ in p.fire] == [at(8), at(9), at(10)]
    assert p.missed is not None and p.missed.count == 7


def test_none_still_fires_a_tick_that_is_only_slightly_late():
    p = plan(EVERY_SEC, last=at(0, 0), now=at(0, 1.5), catchup="none")
    assert p.fire == [(at(0, 1), "schedule")]


def test_new_job_does_not_fire_ticks_before_it_existed():
    p = plan(last=None, since=at(0, 30), now=at(0, 40))
    assert p.fire == [] and p.missed is None and p.next_due == at(1)


def test_reenabled_job_reports_disabled_ticks_and_does_not_catch_them_up():
    p = plan(last=at(0), since=at(30, 20), now=at(30, 25), catchup="all")
    assert p.fire == []
    assert p.disabled is not None and p.disabled.count == 30
    assert p.disabled.first == at(1) and p.disabled.last == at(30)


def test_long_downtime_on_every_second_job_is_cheap_and_bounded():
    # 10 days down with a per-second schedule: no walk over 864,000 ticks.
    p = plan(EVERY_SEC, last=at(0), now=at(0) + timedelta(days=10), catchup="latest")
    # the ticks of the last 2 s are on time (D374): 3 of them when now is a tick
    assert [src for _, src in p.fire] == ["schedule"] * 3
    assert p.missed is not None and p.missed.more and p.missed.count == 1000


def test_impossible_schedule_never_fires():
    p = plan(parse_schedule(cron="59 23 31 2 *"), last=None, now=at(0))
    assert p.fire == [] and p.next_due is None


def test_one_shot_fires_once():
    shot = parse_schedule(at="2026-03-01T12:05:00+00:00")
    first = plan(shot, last=None, now=at(5, 0.01))
    assert first.fire == [(at(5), "schedule")] and first.next_due is None
    assert plan(shot, last=first.last_tick, now=at(6)).fire == []


@pytest.mark.parametrize(
    ("policy", "active", "max_parallel", "expected"),
    [
        ("allow", 0, 0, "fire"),
        ("allow", 5, 0, "fire"),
        ("forbid", 0, 1, "fire"),
        ("forbid", 1, 1, "skip"),
        ("forbid", 1, 0, "skip"),
        ("forbid", 1, 2, "fire"),
        ("forbid", 2, 2, "skip"),
        ("replace", 1, 1, "replace"),
        ("replace", 0, 1, "fire"),
        ("queue", 3, 1, "fire"),
    ],
)
def test_overlap_action(policy, active, max_parallel, expected):
    assert overlap_action(policy, active, max_parallel) == expected


@pytest.mark.parametrize(
    ("policy", "max_parallel", "expected"),
    [("allow", 0, 0), ("allow", 3, 3), ("forbid", 0, 1), ("queue", 0, 1), ("replace", 2, 2)],
)
def test_slot_limit(policy, max_parallel, expected):
    assert slot_limit(policy, max_parallel) == expected


def test_retry_delay_backoff_and_cap():
    assert retry_delay(30, 1.0, 1) == 30
    assert retry_delay(30, 1.0, 4) == 30
    assert retry_delay(10, 2.0, 1) == 10
    assert retry_delay(10, 2.0, 3) == 40
    assert retry_delay(10, 10.0, 20) == 86400


@pytest.mark.parametrize("catchup", ["none", "latest", "all"])
def test_every_on_time_tick_fires_whatever_the_policy(catchup):
    """D374: a scheduler busy 1.8 s past a tick of a per-second job finds ticks 1 (1.8 s late) and
    2 (0.8 s late) due: both within the grace, both on time, neither missed."""
    p = plan(EVERY_SEC, last=at(0, 0), now=at(0, 2.8), catchup=catchup)
    assert p.fire == [(at(0, 1), "schedule"), (at(0, 2), "schedule")]
    assert p.missed is None and p.last_tick == at(0, 2)


@pytest.mark.parametrize(("catchup", "fired"), [("none", [3, 4]), ("latest", [3, 4])])
def test_late_ticks_follow_the_policy_and_on_time_ones_fire(catchup, fired):
    # ticks 1 and 2 are 3.5 and 2.5 s late (missed), 3 and 4 are 1.5 and 0.5 s late (on time)
    p = plan(EVERY_SEC, last=at(0, 0), now=at(0, 4.5), catchup=catchup)
    assert p.fire == [(at(0, s), "schedule") for s in fired]
    assert p.missed is not None and (p.missed.first, p.missed.count) == (at(0, 1), 2)


def test_a_starting_deadline_shorter_than_the_grace_still_bounds_on_time_ticks():
    p = plan(EVERY_SEC, last=at(0, 0), now=at(0, 2.5), catchup="latest", deadline=1)
    assert p.fire == [(at(0, 2), "schedule")]  # tick 1 is 1.5 s late, past the 1 s deadline
    assert p.missed is not None and p.missed.count == 1


def test_only_the_newest_fires_when_nothing_is_on_time():
    every_5s = parse_schedule(cron="*/5 * * * * *")
    p = plan(every_5s, last=at(0, 0), now=at(0, 13), catchup="latest")
    assert p.fire == [(at(0, 10), "catch-up")]  # 3 s late
    assert p.missed is not None and (p.missed.first, p.missed.count) == (at(0, 5), 1)
