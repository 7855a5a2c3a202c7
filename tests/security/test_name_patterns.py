"""Names checked with ``re.match`` and a ``$`` anchor accepted a trailing newline (``$`` matches
before a final ``\\n``): a trigger parameter ``who\\n`` (an operator) became the variable
``CRONMESH_PARAM_WHO\\n`` and was echoed, newline and all, in the new undeclared-parameter
warning (D254) that the CLI prints; a job's ``env:`` name ``PATH\\n`` (an editor) and a role grant
key ``proj\\n`` were stored. Every such name is now matched whole, and refused naming its field."""

from __future__ import annotations

import pytest

from cluster.errors import InvalidInput
from cluster.identity import UserSpec
from cluster.models import JobSpec, TriggerRequest, parse_model
from nodes.cli.completion import _check


@pytest.mark.parametrize(
    ("model", "doc", "field"),
    [
        (TriggerRequest, {"parameters": {"who\n": "x"}}, "parameters"),
        (JobSpec, {"name": "j", "command": "true", "parameters": {"who\n": "x"}}, "parameters"),
        (
            JobSpec,
            {
                "name": "j",
                "command": "true",
                "schedules": [{"cron": "* * * * *", "parameters": {"a\n": "1"}}],
            },
            "schedules.0.parameters",
        ),
        (JobSpec, {"name": "j", "command": "true", "env": {"PATH\n": "/tmp"}}, "env.PATH\n"),
        (UserSpec, {"name": "bob", "roles": {"proj\n": "editor"}}, "roles"),
        (UserSpec, {"name": "bob", "roles": {"*\n": "admin"}}, "roles"),
    ],
)
def test_a_name_with_a_trailing_newline_is_refused_naming_the_field(model, doc, field):
    with pytest.raises(InvalidInput) as err:
        parse_model(model, doc)
    assert err.value.field == field, err.value


def test_the_same_names_without_the_newline_are_accepted():
    assert parse_model(TriggerRequest, {"parameters": {"who": "x"}}).parameters == {"who": "x"}
    assert parse_model(UserSpec, {"name": "bob", "roles": {"proj": "editor"}}).roles


def test_a_completion_word_with_a_newline_never_reaches_the_script():
    assert _check(["job", "list"]) == "job list"
    with pytest.raises(ValueError):
        _check(["job\n"])
