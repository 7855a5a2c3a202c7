from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cluster.errors import InvalidInput
from cluster.ids import Snowflake, id_floor, id_time
from cluster.models import JobSpec, parse_model
from cluster.selector import matches, parse_selector

GOOD = {"name": "nightly-report", "command": "echo hi"}


def err(data):
    with pytest.raises(InvalidInput) as exc:
        parse_model(JobSpec, data)
    return exc.value


def test_issue_example_document_is_accepted():
    job = parse_model(
        JobSpec,
        {
            "name": "nightly-report",
            "description": "Build the report",
            "command": './report.sh --day "$CRONMESH_PARAM_DAY"',
            "schedules": [
                {
                    "cron": "0 30 2 * * *",
                    "timezone": "Europe/Paris",
                    "parameters": {"day": "yesterday"},
                    "enabled": True,
                },
                {"at": "2026-12-24T18:00:00+01:00"},
            ],
            "max_runs": 0,
            "parameters": {"day": "today"},
            "timeout": 3600,
            "retries": 2,
            "retry_interval": 30,
            "retry_backoff": 2.0,
            "overlap": "forbid",
            "max_parallel": 1,
            "catchup": "latest",
            "starting_deadline": 300,
            "priority": 0,
            "tags": ["reports"],
            "target": {"selector": "zone=eu1"},
            "enabled": True,
        },
    )
    assert job.schedules[1].at == datetime(2026, 12, 24, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({**GOOD, "bogus": 1}, "bogus", "unknown field"),
        ({**GOOD, "name": "Bad Name"}, "name", "lowercase letters, digits"),  # D508
        ({**GOOD, "timeout": -1}, "timeout", "greater than or equal"),
        ({**GOOD, "timeout": "soon"}, "timeout", "number"),
        ({**GOOD, "command": "x" * 70000}, "command", "at most"),
        ({"name": "a"}, None, "exactly one of 'command' or 'python'"),
        ({**GOOD, "schedules": [{"cron": "61 * * * *"}]}, "schedules.0.cron", "minute"),
        ({**GOOD, "schedules": [{"cron": "* * * *"}]}, "schedules.0.cron", "5 or 6"),
        (
            {**GOOD, "schedules": [{"cron": "* * * * *", "timezone": "Mars/Base"}]},
            "schedules.0.timezone",
            "Mars/Base",
        ),
        ({**GOOD, "schedules": [{}]}, "schedules.0", "exactly one of 'cron' or 'at'"),
        ({**GOOD, "overlap": "sometimes"}, "overlap", "allow"),
        ({**GOOD, "parameters": {"bad-name": "x"}}, "parameters", "parameter name"),
        ({**GOOD, "target": {"selector": "zone in ()"}}, "target.selector", "empty value list"),
        ({**GOOD, "retry_backoff": 0.5}, "retry_backoff", "greater than or equal"),
    ],
)
def test_bad_documents_name_the_field(data, field, words):
    e = err(data)
    assert e.field == field
    assert words in e.message


def test_parameters_coerce_scalars_to_strings():
    job = parse_model(JobSpec, {**GOOD, "parameters": {"N": 3, "FLAG": True}})
    assert job.parameters == {"N": "3", "FLAG": "true"}


@pytest.mark.parametrize(
    ("selector", "props", "expected"),
    [
        ("", {}, True),
        ("zone=eu1", {"zone": "eu1"}, True),
        ("zone=eu1", {"zone": "us1"}, False),
        ("zone==eu1", {"zone": "eu1"}, True),
        ("zone!=eu1", {}, True),
        ("zone in (eu1, eu2)", {"zone": "eu2"}, True),
        ("zone notin (eu1, eu2)", {"zone": "eu2"}, False),
        ("gpu", {"gpu": "true"}, True),
        ("!maintenance", {"maintenance": "yes"}, False),
        ("zone in (eu1,eu2), gpu=true, !maintenance", {"zone": "eu1", "gpu": "true"}, True),
    ],
)
def test_selectors(selector, props, expected):
    assert matches(parse_selector(selector), props) is expected


def test_snowflakes_sort_by_time_and_are_unique():
    now = [1_800_000_000.0]
    gen = Snowflake(7, clock=lambda: now[0])
    ids = [gen.next() for _ in range(5000)]
    now[0] -= 5  # clock steps back: ids keep increasing
    ids.append(gen.next())
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 19 for i in ids)
    assert abs(id_time(ids[0]).timestamp() - 1_800_000_000.0) < 0.002
    assert id_floor(id_time(ids[0])) <= ids[0]
