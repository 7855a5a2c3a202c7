"""A new user's typo gets the fix, not a bare "unknown" (D506-D508): the field meant, the time
zone meant, the descriptor meant, the rule a name breaks, and a warning for a cron schedule that
never fires."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cluster.errors import InvalidInput
from cluster.models import JobSpec, ScheduleSpec, parse_model
from cluster.workflows import WorkflowSpec
from nodes.api.cron import with_dst_warnings


def _error(doc: dict[str, object], model: type = JobSpec) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_model(model, doc)
    return info.value


def _job(**fields: object) -> dict[str, object]:
    return {"name": "a", "command": "true", **fields}


@pytest.mark.parametrize(
    ("doc", "field", "hint"),
    [
        (_job(timout=5), "timout", "did you mean 'timeout'?"),
        (_job(Timeout=5), "Timeout", "did you mean 'timeout'?"),
        (
            _job(schedules=[{"cron": "@daily", "timzone": "UTC"}]),
            "schedules.0.timzone",
            "did you mean 'timezone'?",
        ),
        (_job(target={"grp": "etl"}), "target.grp", "did you mean 'group'?"),
        (
            _job(notifications=[{"on": ["failure"], "webhok": {"url": "https://x.example"}}]),
            "notifications.0.webhok",
            "did you mean 'webhook'?",
        ),
        # nothing close: a short list of what the place takes
        (_job(resources={"mem": "1Gi"}), "resources.mem", "the fields here are cpu, memory, pids"),
        (
            _job(deadlines={"start": "5m"}),
            "deadlines.start",
            "the fields here are start_within, succeed_within",
        ),
    ],
)
def test_an_unknown_field_says_which_was_meant(doc, field, hint):
    err = _error(doc)
    assert err.field == field
    assert err.message.startswith(f"{field}: unknown field")
    assert hint in err.message, err.message


def test_an_unknown_field_of_a_workflow_task_says_which_was_meant():
    doc = {"name": "w", "tasks": [{"name": "t", "command": "true", "depend_on": ["x"]}]}
    err = _error(doc, WorkflowSpec)
    assert err.field == "tasks.0.depend_on"
    assert "did you mean 'depends_on'?" in err.message, err.message


def test_a_field_far_from_any_gets_no_guess():
    err = _error(_job(zzzzzz=1))
    assert err.message == "zzzzzz: unknown field"


@pytest.mark.parametrize(
    ("zone", "hint"),
    [
        ("Paris", "did you mean 'Europe/Paris'?"),
        ("europe/paris", "did you mean 'Europe/Paris'?"),
        ("Europe/Pariss", "did you mean 'Europe/Paris'?"),
        ("new york", "did you mean 'America/New_York'?"),
        ("America/NewYork", "did you mean 'America/New_York'?"),
        ("UTC+1", "'Etc/GMT-1' (IANA inverts the sign)"),
        ("GMT-5", "'Etc/GMT+5' (IANA inverts the sign)"),
        # an abbreviation is not guessed (CEST is not EST)
        ("CEST", "an abbreviation such as 'CEST' is not a zone"),
        ("Mars/Olympus", "use an IANA name such as 'Europe/Paris'"),
        ("America", "'America' is a region: name a zone in it"),  # not "America/Merida"
    ],
)
def test_an_unknown_time_zone_says_which_was_meant(zone, hint):
    err = _error(_job(schedules=[{"cron": "@daily", "timezone": zone}]))
    assert err.field == "schedules.0.timezone"
    assert f"unknown time zone {zone!r}" in err.message
    assert hint in err.message, err.message


@pytest.mark.parametrize(
    ("cron", "hint"),
    [
        ("@dayly", "did you mean '@daily'?"),
        ("@everyy 10s", "did you mean '@every'?"),
        ("@sometimes", "the descriptors are @annually, @daily"),
    ],
)
def test_an_unknown_descriptor_says_which_was_meant(cron, hint):
    err = _error(_job(schedules=[{"cron": cron}]))
    assert err.field == "schedules.0.cron"
    assert hint in err.message, err.message


@pytest.mark.parametrize(
    ("doc", "field"),
    [(_job(name="Nightly_Report"), "name"), (_job(budgets=["Partner API"]), "budgets.0")],
)
def test_a_bad_name_states_the_rule(doc, field):
    err = _error(doc)
    assert err.field == field
    assert "is not a valid name: a name is 1-63 characters: lowercase letters" in err.message
    assert "String should match pattern" not in err.message


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "never"),
    [
        ("0 0 30 2 *", True),  # February 30th
        ("59 23 31 2 *", True),
        ("0 0 31 4,6,9,11 *", True),  # the 31st of a 30-day month
        ("0 0 29 2 *", False),  # leap years: rare, but it fires
        ("0 0 31 * *", False),
        ("*/10 * * * * *", False),
    ],
)
def test_saving_a_schedule_that_never_fires_warns(cron, never):
    spec = ScheduleSpec.model_validate({"cron": cron, "timezone": "UTC"})
    answer = with_dst_warnings({"name": "a"}, [spec], "default/a", NOW)
    codes = [w["code"] for w in answer.get("warnings", [])]
    assert codes == (["never_fires"] if never else [])
    if never:
        (w,) = answer["warnings"]
        assert w["field"] == "schedules.0"
        assert f"{cron!r} never fires" in w["message"]
        assert "day-of-month, month and day-of-week" in w["message"]


@pytest.mark.parametrize(
    ("at", "never"),
    [
        ("2026-12-07T11:59:00Z", True),  # a minute before the save: never caught up (D6)
        ("2026-12-07T12:59:00+01:00", True),
        ("2026-12-07T12:00:05Z", False),
        ("2026-12-24T18:00:00", False),  # wall time in the schedule's zone
    ],
)
def test_saving_a_one_shot_in_the_past_warns(at, never):
    spec = ScheduleSpec.model_validate({"at": at, "timezone": "Europe/Paris"})
    answer = with_dst_warnings({"name": "a"}, [spec], "default/a", NOW)
    warnings = answer.get("warnings", [])
    assert [w["code"] for w in warnings] == (["never_fires"] if never else [])
    if never:
        assert warnings[0]["message"].startswith("at 2026-12-07T")
        assert "is not after now: a one-shot schedule fires only" in warnings[0]["message"]


def test_an_every_schedule_never_warns():
    spec = ScheduleSpec.model_validate({"cron": "@every 90s"})
    assert "warnings" not in with_dst_warnings({"name": "a"}, [spec], "default/a", NOW)


def test_a_disabled_impossible_schedule_does_not_warn():
    spec = ScheduleSpec.model_validate({"cron": "0 0 30 2 *", "enabled": False})
    assert "warnings" not in with_dst_warnings({"name": "a"}, [spec], "default/a", NOW)
