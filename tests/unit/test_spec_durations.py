"""Every duration of a job, a workflow and a task takes seconds or ``90s``/``15m``/``2h``/``1d``
(D516), as ``deadlines`` and ``expected_every`` did: stored as seconds, bounded per field, and a
value that is not a duration is refused naming its field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cluster.models import JobSpec
from cluster.workflows import WorkflowSpec

JOB = {"name": "a", "command": "true"}


@pytest.mark.parametrize(
    ("field", "value", "seconds"),
    [
        ("timeout", "5m", 300.0),
        ("timeout", "30d", 30 * 86400.0),
        ("timeout", 90, 90.0),
        ("kill_grace", "1m", 60.0),
        ("retry_interval", "30s", 30.0),
        ("retry_interval", "1.5h", 5400.0),
        ("starting_deadline", "2h", 7200.0),
    ],
)
def test_a_job_takes_durations(field, value, seconds):
    assert getattr(JobSpec.model_validate({**JOB, field: value}), field) == seconds


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout", "31d"),  # over its 30 days
        ("timeout", "5 minutes"),
        ("kill_grace", "2h"),  # over its hour
        ("retry_interval", "2d"),  # over its day
        ("starting_deadline", "367d"),
        ("timeout", "-5m"),
    ],
)
def test_a_value_that_is_no_duration_or_too_long_is_refused_by_name(field, value):
    with pytest.raises(ValidationError) as err:
        JobSpec.model_validate({**JOB, field: value})
    assert [e["loc"] for e in err.value.errors()] == [(field,)]


def test_a_workflow_and_its_tasks_take_durations():
    wf = WorkflowSpec.model_validate(
        {
            "name": "w",
            "starting_deadline": "1d",
            "tasks": [
                {
                    "name": "t",
                    "command": "true",
                    "timeout": "10m",
                    "retry_interval": "45s",
                    "kill_grace": "5s",
                }
            ],
        }
    )
    task = wf.tasks[0]
    assert (wf.starting_deadline, task.timeout, task.retry_interval, task.kill_grace) == (
        86400.0,
        600.0,
        45.0,
        5.0,
    )
    # stored as seconds: the document written back reads the same
    assert WorkflowSpec.model_validate(wf.model_dump()) == wf
