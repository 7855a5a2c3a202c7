"""DST policy of cron schedules (D220): ``gap: shift|skip`` and ``fold: auto|first|both`` at the
transitions of several zones, with plain values (expected instants in UTC).

2026 transitions used here (UTC instant: wall clock before -> after):
- America/New_York: Mar 8 07:00 (02:00 -> 03:00), Nov 1 06:00 (02:00 -> 01:00)
- Europe/Berlin: Mar 29 01:00 (02:00 -> 03:00), Oct 25 01:00 (03:00 -> 02:00)
- Australia/Lord_Howe (30-minute shift): Apr 4 15:00 (Apr 5 02:00 -> 01:30), Oct 3 15:30
  (Oct 4 02:00 -> 02:30)
- Australia/Sydney (southern hemisphere): Apr 4 16:00 (Apr 5 03:00 -> 02:00), Oct 3 16:00
  (Oct 4 02:00 -> 03:00)
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from cluster.cron import DstPolicy, next_times, parse_schedule, ticks_between
from cluster.errors import InvalidSchedule


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M")


NY, BERLIN, LORD_HOWE, SYDNEY = (
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Australia/Sydney",
)

CASES = [
    # ---- New York, fall back: 01:00-01:59 twice
    (NY, "30 1 * * *", "shift", "auto", utc(2026, 10, 31, 12),
     ["2026-11-01T05:30", "2026-11-02T06:30"]),
    (NY, "30 1 * * *", "shift", "first", utc(2026, 10, 31, 12),
     ["2026-11-01T05:30", "2026-11-02T06:30"]),
    (NY, "30 1 * * *", "shift", "both", utc(2026, 10, 31, 12),
     ["2026-11-01T05:30", "2026-11-01T06:30", "2026-11-02T06:30"]),
    (NY, "*/30 * * * *", "shift", "auto", utc(2026, 11, 1, 4, 50),
     ["2026-11-01T05:00", "2026-11-01T05:30", "2026-11-01T06:00", "2026-11-01T06:30",
      "2026-11-01T07:00"]),
    (NY, "*/30 * * * *", "shift", "first", utc(2026, 11, 1, 4, 50),  # the 2nd pass is silent
     ["2026-11-01T05:00", "2026-11-01T05:30", "2026-11-01T07:00", "2026-11-01T07:30"]),
    (NY, "*/30 * * * *", "shift", "both", utc(2026, 11, 1, 4, 50),
     ["2026-11-01T05:00", "2026-11-01T05:30", "2026-11-01T06:00", "2026-11-01T06:30",
      "2026-11-01T07:00"]),
    # ---- New York, spring forward: 02:00-02:59 missing
    (NY, "30 2 * * *", "shift", "auto", utc(2026, 3, 7, 12),
     ["2026-03-08T07:00", "2026-03-09T06:30"]),
    (NY, "30 2 * * *", "skip", "auto", utc(2026, 3, 7, 12),
     ["2026-03-09T06:30", "2026-03-10T06:30"]),
    (NY, "15/30 * * * *", "shift", "auto", utc(2026, 3, 8, 6, 40),  # 02:15, 02:45 -> one 03:00
     ["2026-03-08T06:45", "2026-03-08T07:00", "2026-03-08T07:15", "2026-03-08T07:45"]),
    (NY, "15/30 * * * *", "skip", "auto", utc(2026, 3, 8, 6, 40),
     ["2026-03-08T06:45", "2026-03-08T07:15", "2026-03-08T07:45"]),
    (NY, "0 3 * * *", "skip", "auto", utc(2026, 3, 8, 6),  # 03:00 exists: not skipped
     ["2026-03-08T07:00", "2026-03-09T07:00"]),
    # ---- Berlin
    (BERLIN, "30 2 * * *", "shift", "auto", utc(2026, 3, 28, 12),
     ["2026-03-29T01:00", "2026-03-30T00:30"]),
    (BERLIN, "30 2 * * *", "skip", "both", utc(2026, 3, 28, 12),
     ["2026-03-30T00:30", "2026-03-31T00:30"]),
    (BERLIN, "30 2 * * *", "shift", "first", utc(2026, 10, 24, 12),
     ["2026-10-25T00:30", "2026-10-26T01:30"]),
    (BERLIN, "30 2 * * *", "skip", "both", utc(2026, 10, 24, 12),
     ["2026-10-25T00:30", "2026-10-25T01:30", "2026-10-26T01:30"]),
    (BERLIN, "0 * * * *", "shift", "first", utc(2026, 10, 24, 23, 30),  # hourly, one pass
     ["2026-10-25T00:00", "2026-10-25T02:00", "2026-10-25T03:00"]),
    # ---- Lord Howe: 30-minute transitions
    (LORD_HOWE, "45 1 * * *", "shift", "auto", utc(2026, 4, 4, 12),  # 01:30-01:59 twice
     ["2026-04-04T14:45", "2026-04-05T15:15"]),
    (LORD_HOWE, "45 1 * * *", "shift", "both", utc(2026, 4, 4, 12),
     ["2026-04-04T14:45", "2026-04-04T15:15", "2026-04-05T15:15"]),
    (LORD_HOWE, "15 1 * * *", "shift", "both", utc(2026, 4, 4, 12),  # 01:15 is not repeated
     ["2026-04-04T14:15", "2026-04-05T14:45"]),
    (LORD_HOWE, "*/20 * * * *", "shift", "first", utc(2026, 4, 4, 14, 30),
     ["2026-04-04T14:40", "2026-04-04T15:30", "2026-04-04T15:50", "2026-04-04T16:10"]),
    (LORD_HOWE, "*/20 * * * *", "shift", "both", utc(2026, 4, 4, 14, 30),  # 01:40 twice
     ["2026-04-04T14:40", "2026-04-04T15:10", "2026-04-04T15:30", "2026-04-04T15:50"]),
    (LORD_HOWE, "15 2 * * *", "shift", "auto", utc(2026, 10, 3, 12),  # 02:00-02:29 missing
     ["2026-10-03T15:30", "2026-10-04T15:15"]),
    (LORD_HOWE, "15 2 * * *", "skip", "auto", utc(2026, 10, 3, 12),
     ["2026-10-04T15:15", "2026-10-05T15:15"]),
    (LORD_HOWE, "45 2 * * *", "skip", "auto", utc(2026, 10, 3, 12),  # after the gap: kept
     ["2026-10-03T15:45", "2026-10-04T15:45"]),
    # ---- Sydney: fall back in April, spring forward in October
    (SYDNEY, "30 2 * * *", "shift", "auto", utc(2026, 4, 4, 12),
     ["2026-04-04T15:30", "2026-04-05T16:30"]),
    (SYDNEY, "30 2 * * *", "shift", "both", utc(2026, 4, 4, 12),
     ["2026-04-04T15:30", "2026-04-04T16:30", "2026-04-05T16:30"]),
    (SYDNEY, "30 2 * * *", "shift", "auto", utc(2026, 10, 3, 12),
     ["2026-10-03T16:00", "2026-10-04T15:30"]),
    (SYDNEY, "30 2 * * *", "skip", "auto", utc(2026, 10, 3, 12),
     ["2026-10-04T15:30", "2026-10-05T15:30"]),
]  # fmt: skip


@pytest.mark.parametrize(("tz", "cron", "gap", "fold", "after", "expected"), CASES)
def test_policy(tz: str, cron: str, gap: str, fold: str, after: datetime, expected: list[str]):
    sched = parse_schedule(cron=cron, timezone=tz, dst=DstPolicy.of(gap, fold))
    assert [iso(t) for t in next_times(sched, after, len(expected))] == expected


@pytest.mark.parametrize(("tz", "cron", "gap", "fold", "after", "expected"), CASES)
def test_policy_from_every_intermediate_instant(
    tz: str, cron: str, gap: str, fold: str, after: datetime, expected: list[str]
) -> None:
    """From anywhere between two fire times (also inside a repeated range) comes the next one."""
    sched = parse_schedule(cron=cron, timezone=tz, dst=DstPolicy.of(gap, fold))
    times = [after] + [datetime.fromisoformat(t).replace(tzinfo=UTC) for t in expected]
    for prev, nxt in itertools.pairwise(times):
        probe = prev
        while probe < nxt:
            assert sched.next_after(probe) == nxt, probe
            probe += timedelta(minutes=3)


def test_defaults_are_the_old_rules() -> None:
    for tz, cron, gap, fold, after, _ in CASES:
        if (gap, fold) == ("shift", "auto"):
            old = parse_schedule(cron=cron, timezone=tz)
            new = parse_schedule(cron=cron, timezone=tz, dst=DstPolicy())
            assert next_times(old, after, 6) == next_times(new, after, 6)


def test_fold_both_ticks_are_distinct_instants() -> None:
    """Two fire times at one wall clock are two instants, so two tick keys (slot identity)."""
    daily = parse_schedule(cron="30 1 * * *", timezone=NY, dst=DstPolicy.of(fold="both"))
    day = utc(2026, 11, 1, 4)  # local midnight
    ticks = ticks_between(daily, day, day + timedelta(hours=25), 100)
    assert [iso(t) for t in ticks] == ["2026-11-01T05:30", "2026-11-01T06:30"]
    assert len({int(t.timestamp() * 1000) for t in ticks}) == 2


def test_a_whole_year_counts() -> None:
    """A daily job over 2026 in New York: 365 fire times, +1 with fold both, -1 with gap skip."""
    start, end = utc(2026, 1, 1, 5), utc(2027, 1, 1, 5)
    for cron in ("30 1 * * *", "30 2 * * *"):
        counts = {}
        for gap, fold in itertools.product(("shift", "skip"), ("auto", "first", "both")):
            sched = parse_schedule(cron=cron, timezone=NY, dst=DstPolicy.of(gap, fold))
            counts[gap, fold] = len(ticks_between(sched, start, end, 1000))
        if cron == "30 1 * * *":  # in the fold, never in the gap
            assert counts == {
                ("shift", "auto"): 365, ("shift", "first"): 365, ("shift", "both"): 366,
                ("skip", "auto"): 365, ("skip", "first"): 365, ("skip", "both"): 366,
            }  # fmt: skip
        else:  # in the gap, never in the fold (02:00 EST follows the repeated hour)
            assert counts == {
                ("shift", "auto"): 365, ("shift", "first"): 365, ("shift", "both"): 365,
                ("skip", "auto"): 364, ("skip", "first"): 364, ("skip", "both"): 364,
            }  # fmt: skip


@pytest.mark.parametrize(
    ("gap", "fold", "field"), [("jump", None, "dst.gap"), (None, "second", "dst.fold")]
)
def test_policy_values_are_checked(gap: str | None, fold: str | None, field: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        DstPolicy.of(gap, fold)
    assert info.value.field == field
    assert field in info.value.message


# --------------------------------------------------------------------------- flags and warnings

from cluster.cron_dst import fire_flags, transition_warnings  # noqa: E402


def flagged(tz: str, cron: str, gap: str, fold: str, after: datetime, n: int) -> list[str]:
    sched = parse_schedule(cron=cron, timezone=tz, dst=DstPolicy.of(gap, fold))
    times = next_times(sched, after, n)
    return [f"{iso(t)} {f}" for t, f in zip(times, fire_flags(sched, after, times), strict=True)]


def test_flags_in_a_fold() -> None:
    assert flagged(NY, "30 1 * * *", "shift", "both", utc(2026, 10, 31, 12), 3) == [
        "2026-11-01T05:30 fold_first",
        "2026-11-01T06:30 fold_second",
        "2026-11-02T06:30 None",
    ]
    assert flagged(LORD_HOWE, "45 1 * * *", "shift", "auto", utc(2026, 4, 4, 12), 2) == [
        "2026-04-04T14:45 fold_first",
        "2026-04-05T15:15 None",
    ]


def test_flags_at_a_gap() -> None:
    assert flagged(BERLIN, "30 2 * * *", "shift", "auto", utc(2026, 3, 28, 12), 2) == [
        "2026-03-29T01:00 gap_shifted",
        "2026-03-30T00:30 None",
    ]
    assert flagged(BERLIN, "30 2 * * *", "skip", "auto", utc(2026, 3, 28, 12), 2) == [
        "2026-03-30T00:30 gap_skipped",
        "2026-03-31T00:30 None",
    ]
    # a real 03:00 at the instant of the transition is not shifted
    assert flagged(BERLIN, "0 3 * * *", "shift", "auto", utc(2026, 3, 28, 12), 1) == [
        "2026-03-29T01:00 None"
    ]
    assert flagged(SYDNEY, "*/30 * * * *", "shift", "auto", utc(2026, 10, 3, 15, 20), 3) == [
        "2026-10-03T15:30 None",  # 01:30 AEST
        "2026-10-03T16:00 gap_shifted",  # 02:00 and 02:30 -> 03:00 AEDT
        "2026-10-03T16:30 None",
    ]
    assert flagged("UTC", "30 2 * * *", "skip", "both", utc(2026, 3, 28, 12), 1) == [
        "2026-03-29T02:30 None"
    ]


def test_warnings_for_fixed_times_in_a_transition() -> None:
    now = utc(2026, 1, 1)
    scheds = [
        ("schedules.0", parse_schedule(cron="30 2 * * *", timezone=NY)),  # gap (Mar 8)
        ("schedules.1", parse_schedule(cron="30 1 * * SUN", timezone=NY)),  # fold (Nov 1)
        ("schedules.2", parse_schedule(cron="*/15 * * * *", timezone=NY)),  # wildcard hour
        ("schedules.3", parse_schedule(cron="0 12 * * *", timezone=NY)),  # never touched
        ("schedules.4", parse_schedule(cron="30 2 * * *", timezone="UTC")),
        ("schedules.5", parse_schedule(cron="@every 1h")),
        (
            "schedules.6",
            parse_schedule(cron="45 1 * * *", timezone=LORD_HOWE, dst=DstPolicy.of("skip", "both")),
        ),
    ]
    warnings = transition_warnings(scheds, now)
    assert [(w["field"], w["code"], w["at"]) for w in warnings] == [
        ("schedules.0", "dst_gap", "2026-03-08T02:30:00"),
        ("schedules.1", "dst_fold", "2026-11-01T01:30:00"),
        ("schedules.6", "dst_fold", "2026-04-05T01:45:00"),
    ]
    assert warnings[0]["message"] == (
        "02:30 does not exist on 2026-03-08 in America/New_York (clocks go forward from 02:00 "
        "to 03:00): it runs at 03:00 instead (dst.gap: shift)"
    )
    assert "runs once, at the first 01:30 (dst.fold: auto)" in warnings[1]["message"]
    assert "runs twice (dst.fold: both)" in warnings[2]["message"]
    # a year ahead only: from 2026-03-20 the spring gap of 2026 is gone, 2027's is in
    later = transition_warnings(scheds[:1], utc(2026, 3, 20))
    assert [w["at"] for w in later] == ["2027-03-14T02:30:00"]


# --------------------------------------------------------------------------- brute force


def _reference(tz_name: str, cron: str, gap: str, fold: str, start: datetime, hours: int):
    """The policy by its definition, minute by minute over UTC: a minute fires when its wall time
    matches and it is not the second pass of a repeated time (unless the fold policy fires both);
    under ``gap: shift`` the instant where the clocks jump forward also fires when a wall time in
    the skipped range matches. Independent of the matcher: it only asks ``matches(wall)``."""
    from zoneinfo import ZoneInfo

    from cluster.cron_syntax import parse_fields

    f = parse_fields(cron)
    tz = ZoneInfo(tz_name)
    both = fold == "both" or (fold == "auto" and f.hour_wild)

    def matches(w: datetime) -> bool:
        dom, dow = w.day in f.days, (w.isoweekday() % 7) in f.weekdays
        day = (dom and dow) if (f.dom_star or f.dow_star) else (dom or dow)
        return w.minute in f.minutes and w.hour in f.hours and w.month in f.months and day

    out = []
    for i in range(hours * 60):
        u = start + timedelta(minutes=i)
        local = u.astimezone(tz)
        wall = local.replace(tzinfo=None, fold=0)
        ambiguous = (
            wall.replace(tzinfo=tz).utcoffset() != wall.replace(tzinfo=tz, fold=1).utcoffset()
        )
        fire = matches(wall) and (not ambiguous or local.fold == 0 or both)
        before = (u - timedelta(minutes=1)).astimezone(tz)
        jump = local.utcoffset() - before.utcoffset()  # type: ignore[operator]
        if gap == "shift" and jump > timedelta(0):
            skipped = wall - jump
            while skipped < wall and not fire:
                fire = matches(skipped)
                skipped += timedelta(minutes=1)
        if fire:
            out.append(u)
    return out


TRANSITIONS = {  # 2026, UTC
    NY: (utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)),
    BERLIN: (utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)),
    LORD_HOWE: (utc(2026, 4, 4, 15), utc(2026, 10, 3, 15, 30)),
    SYDNEY: (utc(2026, 4, 4, 16), utc(2026, 10, 3, 16)),
}


@pytest.mark.parametrize("tz", [NY, BERLIN, LORD_HOWE, SYDNEY])
@pytest.mark.parametrize(
    "cron",
    ["30 2 * * *", "45 1 * * *", "15,45 1-2 * * *", "*/7 * * * *", "10 */2 * * *",
     "0 * * * *", "20 1 * * SUN", "40 2 *,5 * SUN"],
)  # fmt: skip
@pytest.mark.parametrize(("gap", "fold"), [("shift", "auto"), ("skip", "first"), ("shift", "both")])
def test_against_a_brute_force_reference(tz: str, cron: str, gap: str, fold: str) -> None:
    sched = parse_schedule(cron=cron, timezone=tz, dst=DstPolicy.of(gap, fold))
    for change in TRANSITIONS[tz]:  # 26 hours around each transition
        a = change - timedelta(hours=13)
        got = ticks_between(
            sched, a - timedelta(seconds=1), a + timedelta(hours=26) - timedelta(minutes=1), 10_000
        )
        assert got == _reference(tz, cron, gap, fold, a, 26), a


# --------------------------------------------------------------------------- the job model


def test_the_default_policy_keeps_a_schedules_identity() -> None:
    import hashlib

    from cluster.models import ScheduleSpec

    plain = ScheduleSpec(cron="30 2 * * *", timezone="Europe/Berlin")
    old = hashlib.sha1(b"30 2 * * *||Europe/Berlin|").hexdigest()[:10]  # before dst existed
    assert plain.fingerprint() == old
    explicit = ScheduleSpec.model_validate(
        {"cron": "30 2 * * *", "timezone": "Europe/Berlin", "dst": {"gap": "shift"}}
    )
    assert explicit.fingerprint() == old
    skip = ScheduleSpec.model_validate(
        {"cron": "30 2 * * *", "timezone": "Europe/Berlin", "dst": {"gap": "skip"}}
    )
    assert skip.fingerprint() != old
    # the parsed schedule carries the policy
    assert next_times(skip.parse("p/j"), utc(2026, 3, 28, 12), 1) == [utc(2026, 3, 30, 0, 30)]
    assert next_times(plain.parse("p/j"), utc(2026, 3, 28, 12), 1) == [utc(2026, 3, 29, 1)]


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"cron": "0 2 * * *", "dst": {"gap": "later"}}, "schedules.0.dst.gap"),
        ({"cron": "0 2 * * *", "dst": {"fold": "last"}}, "schedules.0.dst.fold"),
        ({"cron": "0 2 * * *", "dst": {"shift": True}}, "schedules.0.dst.shift"),
        ({"cron": "0 2 * * *", "dst": "skip"}, "schedules.0.dst"),
        ({"cron": "@every 1h", "dst": {}}, "schedules.0.dst"),
        ({"at": "2026-03-29T02:30:00", "dst": {"gap": "skip"}}, "schedules.0.dst"),
    ],
)
def test_bad_policies_name_the_field(schedule: dict[str, object], field: str) -> None:
    from cluster.errors import InvalidInput
    from cluster.models import JobSpec, parse_model

    with pytest.raises(InvalidInput) as info:
        parse_model(JobSpec, {"name": "j", "command": "true", "schedules": [schedule]})
    assert info.value.field == field, info.value.message


def test_job_and_workflow_schedules_are_parsed_with_their_policy() -> None:
    """A ScheduleSpec is parsed by ``spec.parse(hash_key)``, which applies its ``dst`` policy:
    a call that rebuilds it by hand (``parse_schedule(cron=spec.cron, ...)``) would silently
    ignore the policy in whatever it computes (planner, backfill, ticks, simulations, D220)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = []
    for path in [*root.joinpath("cluster").rglob("*.py"), *root.joinpath("nodes").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name != "parse_schedule":
                continue
            for kw in node.keywords:
                value = kw.value
                if (
                    kw.arg == "cron"
                    and isinstance(value, ast.Attribute)
                    and value.attr == "cron"
                    and not (isinstance(value.value, ast.Name) and value.value.id == "self")
                ):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found, f"use spec.parse(hash_key) (it applies the DST policy) at: {found}"
