"""Pure notification decisions: events per outcome, rule matching, signatures, message shapes."""

from __future__ import annotations

import json

import pytest

from cluster.errors import InvalidInput
from cluster.models import JobSpec, parse_model
from cluster.notify import (
    NotificationRule,
    Webhook,
    backoff,
    delivery_id,
    events_for,
    matching,
    sign,
    verify,
    webhook_body,
)
from nodes.leader.mailer import SmtpSettings


@pytest.mark.parametrize(
    ("status", "previous", "events"),
    [
        ("failed", None, ["failure"]),
        ("failed", "failed", ["failure"]),
        ("timed_out", "succeeded", ["timeout"]),
        ("lost", None, ["lost"]),
        ("succeeded", None, ["success"]),
        ("succeeded", "succeeded", ["success"]),
        ("succeeded", "failed", ["success", "recovery"]),
        ("succeeded", "timed_out", ["success", "recovery"]),
        ("succeeded", "lost", ["success", "recovery"]),
        ("cancelled", "failed", []),
        ("skipped", None, ["skipped"]),  # a slot skipped by overlap (D232)
    ],
)
def test_events_for_each_outcome(status, previous, events):
    assert events_for(status, previous) == events


def rule(on, url="http://x/"):
    return NotificationRule(on=on, webhook=Webhook(url=url))


def test_each_rule_fires_once_with_its_most_specific_event():
    rules = [
        rule(["success"]),
        rule(["recovery"]),
        rule(["success", "recovery"]),
        rule(["failure"]),
    ]
    assert matching(rules, ["success", "recovery"]) == [
        ("success", 0),
        ("recovery", 1),
        ("recovery", 2),
    ]
    assert matching(rules, ["failure"]) == [("failure", 3)]
    assert matching(rules, []) == []


def test_default_events_are_the_bad_outcomes():
    r = NotificationRule(email={"to": ["ops@example.com"]})
    assert r.on == ["failure", "timeout", "lost"]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"on": ["failure"]}, "notifications.0"),
        ({"webhook": {"url": "ftp://x"}}, "notifications.0.webhook.url"),
        ({"on": ["boom"], "webhook": {"url": "http://x"}}, "notifications.0.on.0"),
        ({"email": {"to": ["not-an-address"]}}, "notifications.0.email"),
        ({"webhook": {"url": "http://x", "format": "teams"}}, "notifications.0.webhook.format"),
        ({"webhook": {"url": "http://x"}, "email": {"to": ["a@b.c"]}}, "notifications.0"),
        (
            {"webhook": {"url": "http://x", "secret": "a", "secret_env": "B"}},
            "notifications.0.webhook",
        ),
        (
            {"webhook": {"url": "http://x", "secret_env": "not valid"}},
            "notifications.0.webhook.secret_env",
        ),
    ],
)
def test_bad_rules_are_rejected_naming_the_field(doc, field):
    with pytest.raises(InvalidInput) as err:
        parse_model(JobSpec, {"name": "j", "command": "true", "notifications": [doc]})
    assert err.value.field == field


def test_signature_covers_timestamp_and_body():
    body = b'{"a":1}'
    sig = sign("k", "1700000000", body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify("k", "1700000000", body, sig)
    assert not verify("k", "1700000001", body, sig)
    assert not verify("other", "1700000000", body, sig)
    assert not verify("k", "1700000000", b'{"a":2}', sig)


RUN = {
    "id": "0000000000000000042",
    "project": "default",
    "job": "backup",
    "status": "failed",
    "attempt": 2,
    "node": "n1",
    "exit_code": 3,
    "error": "exit code 3",
    "source": "schedule",
}


def test_json_and_slack_bodies():
    body = json.loads(webhook_body(Webhook(url="http://x"), "failure", RUN, "d-1"))
    assert body["delivery"] == "d-1" and body["event"] == "failure"
    assert body["run"]["exit_code"] == 3 and body["job"] == "backup"
    slack = json.loads(webhook_body(Webhook(url="http://x", format="slack"), "failure", RUN, "d"))
    assert list(slack) == ["text"]
    assert "default/backup failed" in slack["text"] and "exit code 3" in slack["text"]


def test_delivery_id_is_stable_and_backoff_grows_to_a_cap():
    assert delivery_id("42", 2, "failure", 0) == delivery_id("42", 2, "failure", 0)
    assert delivery_id("42", 2, "failure", 0) != delivery_id("42", 3, "failure", 0)
    assert [backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(30) == 30.0


def test_smtp_url_parsing():
    s = SmtpSettings.from_url("smtp://u%40x:p@mail.local:2525?from=cron@x.org&starttls=1")
    assert (s.host, s.port, s.username, s.password, s.sender, s.tls) == (
        "mail.local",
        2525,
        "u@x",
        "p",
        "cron@x.org",
        "starttls",
    )
    assert SmtpSettings.from_url("smtps://m?from=a@b.c").port == 465
    with pytest.raises(InvalidInput):
        SmtpSettings.from_url("http://m?from=a@b.c")
    with pytest.raises(InvalidInput):
        SmtpSettings.from_url("smtp://m:25")


def test_yaml_on_key_is_not_a_boolean():
    from nodes.cli.yamlio import load

    doc = load("on: [failure]\nemail: {to: [a@b.co]}\nflag: yes\n")
    assert doc["on"] == ["failure"] and doc["flag"] == "yes"
    assert load("x: true\ny: False\n") == {"x": True, "y": False}
    # a document read by a YAML 1.1 loader (the key became True) is taken back too
    assert NotificationRule.model_validate({True: ["lost"], "email": {"to": ["a@b.co"]}}).on == [
        "lost"
    ]
