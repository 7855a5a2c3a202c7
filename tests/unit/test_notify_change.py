"""Notification rules that fire only on a change of the job's state (issue 24 item 4, D259)."""

from __future__ import annotations

import pytest

from cluster.errors import InvalidInput
from cluster.models import parse_model
from cluster.notify import NotificationRule, events_for, is_change, matching, needs_previous

HOOK = {"webhook": {"url": "https://h.example/x"}}


def rule(on: list[str], when: str = "always") -> NotificationRule:
    return NotificationRule.model_validate({"on": on, "when": when, **HOOK})


@pytest.mark.parametrize(
    ("status", "previous", "delivered"),
    [
        ("failed", None, [("failure", 0)]),  # the job's first outcome is a change
        ("failed", "succeeded", [("failure", 0)]),  # first failure after a success
        ("failed", "failed", []),  # still failing: quiet
        ("timed_out", "failed", []),  # another bad outcome is no change
        ("lost", "succeeded", [("lost", 0)]),
        ("succeeded", "failed", [("success", 0)]),  # first success after failures
        ("succeeded", "lost", [("success", 0)]),
        ("succeeded", "succeeded", []),  # still fine: quiet
        ("succeeded", None, []),  # fine from the start: nothing changed
        ("cancelled", "failed", []),  # nobody is told of a cancel
    ],
)
def test_a_change_rule_fires_on_state_changes_only(status, previous, delivered):
    rules = [rule(["failure", "timeout", "lost", "success"], "change")]
    assert matching(rules, events_for(status, previous), previous) == delivered


def test_change_and_always_rules_side_by_side():
    rules = [rule(["failure"]), rule(["failure", "success"], "change"), rule(["recovery"])]
    assert matching(rules, events_for("failed", "failed"), "failed") == [("failure", 0)]
    assert matching(rules, events_for("succeeded", "failed"), "failed") == [
        ("success", 1),
        ("recovery", 2),
    ]
    # a change rule asking for recovery gets the recovery (the most specific event), as before
    both = [rule(["success", "recovery"], "change")]
    assert matching(both, events_for("succeeded", "failed"), "failed") == [("recovery", 0)]
    assert is_change("deadline_missed", "failed")  # events that are not a run's outcome pass


def test_the_previous_outcome_is_read_only_when_a_rule_needs_it():
    assert not needs_previous([rule(["failure"])], "failed")
    assert needs_previous([rule(["recovery"])], "succeeded")
    assert not needs_previous([rule(["recovery"])], "failed")
    assert needs_previous([rule(["failure"], "change")], "failed")
    assert not needs_previous([rule(["failure"], "change")], "cancelled")


def test_when_is_checked_naming_the_field():
    assert NotificationRule.model_validate(HOOK).when == "always"
    with pytest.raises(InvalidInput) as err:
        parse_model(NotificationRule, {"on": ["failure"], "when": "sometimes", **HOOK})
    assert err.value.field == "when"
