"""Links into the UI in notifications (D256): the public URL's checks and the links of a run,
in the JSON payload, the Slack text and the node setting."""

from __future__ import annotations

import json

import pytest

from cluster.errors import InvalidInput
from cluster.links import check_public_url, run_links, with_links
from cluster.notify import Webhook, link_lines, payload, slack_body, webhook_body
from nodes.config_sources import load_config

BASE = "https://cron.example.com"
RUN = {"id": "0387abc", "project": "ops", "job": "nightly", "status": "failed", "exit_code": 2}
TASK_RUN = {
    "id": "0388def",
    "project": "ops",
    "job": "@etl:load",
    "status": "failed",
    "execution": "0380aaa",
    "task": "load",
}


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://cron.example.com", "https://cron.example.com"),
        ("https://cron.example.com/", "https://cron.example.com"),
        ("http://10.0.0.5:8080/cronmesh/", "http://10.0.0.5:8080/cronmesh"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_public_url_accepted(given, kept):
    assert check_public_url(given) == kept


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("https://admin:pw@cron.example.com", "user name or password"),
        ("https://admin@cron.example.com", "user name or password"),
        ("javascript:alert(1)", "http:// or https://"),
        ("ftp://cron.example.com", "http:// or https://"),
        ("cron.example.com", "http:// or https://"),
        ("https://", "needs a host"),
        ("https://cron.example.com/?next=x", "query or a fragment"),
        ("https://cron.example.com/#/runs", "query or a fragment"),
        ("https://cron.example.com/a b", "spaces"),
        ("https://cron.example.com/\r\nBcc: x@y.z", "spaces or control"),
        ("https://cron.example.com:99999", "not a URL"),
        ("https://cron.example.com/" + "a" * 600, "longer than"),
    ],
)
def test_public_url_refused_saying_why(given, says):
    with pytest.raises(ValueError, match=says):
        check_public_url(given)


def test_public_url_setting_refused_by_the_node_naming_the_field():
    with pytest.raises(InvalidInput) as err:
        load_config({}, env={"CRONMESH_PUBLIC_URL": "https://u:p@cron.example.com"})
    assert err.value.field == "public_url"
    config = load_config({"public_url": "https://cron.example.com/"}, env={})
    assert config.public_url == "https://cron.example.com"
    assert load_config({}, env={}).public_url is None


def test_links_of_a_job_run_and_of_a_workflow_task_run():
    assert run_links(BASE, RUN) == {
        "run": f"{BASE}/ui/#/runs/0387abc?project=ops",
        "job": f"{BASE}/ui/#/jobs/nightly?project=ops",
    }
    assert run_links(BASE, TASK_RUN) == {
        "run": f"{BASE}/ui/#/runs/0388def?project=ops",
        "execution": f"{BASE}/ui/#/executions/0380aaa?task=load&project=ops",
    }
    assert run_links(None, RUN) == {} and run_links("", RUN) == {}
    odd = {**RUN, "id": "a/b?c#d", "job": "x y"}
    links = run_links(BASE, odd)
    assert links["run"] == f"{BASE}/ui/#/runs/a%2Fb%3Fc%23d?project=ops"
    assert links["job"] == f"{BASE}/ui/#/jobs/x%20y?project=ops"


def test_messages_carry_the_links():
    run = {**TASK_RUN, "links": run_links(BASE, TASK_RUN)}
    body = payload("failure", run, "d1")
    assert body["links"]["execution"].endswith("#/executions/0380aaa?task=load&project=ops")
    text = slack_body("failure", run)["text"]
    assert f"<{BASE}/ui/#/runs/0388def?project=ops|Open the run>" in text
    assert "|Open the workflow execution>" in text
    assert link_lines(run)[0] == ("Open the run", f"{BASE}/ui/#/runs/0388def?project=ops")
    # without a public URL: no links, and the payload says so with an empty object
    assert payload("failure", RUN, "d1")["links"] == {}
    assert "<" not in slack_body("failure", RUN)["text"]
    raw = json.loads(webhook_body(Webhook(url="https://h.example/x"), "failure", run, "d1"))
    assert raw["links"]["run"] == f"{BASE}/ui/#/runs/0388def?project=ops"


def test_messages_about_a_slot_without_a_run_link_to_the_job_or_workflow():
    slot = {"project": "ops", "job": "nightly", "slot": {"tick": "2026-12-07T09:00:00Z"}}
    doc = with_links(BASE, slot)
    assert doc["links"] == {"job": f"{BASE}/ui/#/jobs/nightly?project=ops"}
    assert link_lines(doc) == [("Open the job", f"{BASE}/ui/#/jobs/nightly?project=ops")]
    assert "links" not in slot  # a copy
    wf = with_links(BASE, {"project": "ops", "job": "@etl", "slot": {}})
    assert wf["links"] == {"workflow": f"{BASE}/ui/#/workflows/etl?project=ops"}
    assert with_links(None, slot) is slot
    kept = {**RUN, "links": {"run": "x"}}
    assert with_links(BASE, kept) is kept
