"""Workflow documents: validation, snapshots as run documents, result bounds, report keys."""

from __future__ import annotations

import pytest

from cluster.errors import InvalidInput
from cluster.workflows import (
    MAX_EXECUTION_RESULTS,
    MAX_STORED_RESULT,
    env_name,
    parse_report_key,
    parse_workflow,
    stored_result,
    task_job_name,
)


def test_valid_workflow_and_task_job_spec():
    wf = parse_workflow(
        {
            "name": "etl",
            "priority": 7,
            "tasks": [
                {"name": "a", "command": "true", "retries": 2, "target": {"selector": "zone=eu"}},
                {"name": "b", "external": True, "depends_on": ["a"]},
            ],
        }
    )
    job = wf.job_spec(wf.task("a"))
    assert (job.name, job.command, job.retries, job.priority) == ("a", "true", 2, 7)
    assert job.target.selector == "zone=eu" and job.overlap == "allow"
    assert task_job_name("etl", "a") == "@etl:a"


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({"name": "a"}, "tasks.0"),
        ({"name": "a", "command": "x", "external": True}, "tasks.0"),
        ({"name": "A b", "command": "x"}, "tasks.0.name"),
        ({"name": "a", "command": "x", "trigger_rule": "one_success"}, "tasks.0.trigger_rule"),
    ],
)
def test_bad_tasks_name_the_field(task, field):
    with pytest.raises(InvalidInput) as err:
        parse_workflow({"name": "w", "tasks": [task]})
    assert err.value.field == field


def test_result_bounds():
    assert stored_result({"a": 1}) == ({"a": 1}, None)
    assert stored_result(None) == (None, None)
    big = "x" * MAX_STORED_RESULT
    kept, why = stored_result(big)
    assert kept is None and "exceeds" in (why or "")
    kept, why = stored_result({"a": 1}, used=MAX_EXECUTION_RESULTS - 3)
    assert kept is None and "already holds" in (why or "")


def test_report_keys_and_env_names():
    assert parse_report_key("0383770413467877376.approve") == ("0383770413467877376", "approve")
    assert parse_report_key("1.a.b") == ("1", "a.b")
    for bad in ("approve", "x.approve", "1.", "1" * 20 + ".a"):
        with pytest.raises(InvalidInput):
            parse_report_key(bad)
    assert env_name("load-db.v2") == "LOAD_DB_V2"


def test_example_workflow_document_is_valid():
    from pathlib import Path

    import yaml

    doc = yaml.safe_load(
        (Path(__file__).parents[2] / "docs/examples/etl-workflow.yaml").read_text()
    )
    wf = parse_workflow(doc)
    assert wf.graph().order == ("extract", "transform", "load", "cleanup")
