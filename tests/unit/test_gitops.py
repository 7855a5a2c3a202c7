"""GitOps planning from plain values: defaults are not changes, kinds, duplicates, prune scope."""

from __future__ import annotations

import pytest

from cluster.errors import InvalidInput
from nodes.cli.gitops_plan import KINDS, export_files, parse_documents, plan

JOB = KINDS["Job"]


def docs(text: str, project: str = "default"):
    return parse_documents([("f.yaml", text)], project)


def stored(name: str, **spec):
    return {
        "name": name,
        "project": "default",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "active_since": "2026-01-01T00:00:00Z",
        **spec,
    }


def test_documents_kinds_projects_and_lists():
    d = docs(
        "name: a\ncommand: 'true'\n---\nkind: job\nproject: p2\nname: b\ncommand: x\n"
        "---\n- name: c\n  command: y\n"
    )
    assert [(x.kind.name, x.project, x.name) for x in d] == [
        ("Job", "default", "a"),
        ("Job", "p2", "b"),
        ("Job", "default", "c"),
    ]
    assert "kind" not in d[1].body and "project" not in d[1].body


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Cronjob\nname: a\ncommand: x\n", "unknown kind"),
        ("command: x\n", "needs a name"),
        ("name: a\ncommand: x\n---\nname: a\ncommand: y\n", "defined twice"),
        ("name: a\ncommand: x\nretries: lots\n", "retries"),
        ("- 1\n", "mapping"),
        ("name: [\n", "not valid YAML"),
    ],
)
def test_bad_documents_fail_before_anything_is_written(text, message):
    with pytest.raises(InvalidInput) as err:
        docs(text)
    assert message in err.value.message


def test_plan_ignores_defaults_and_read_only_fields():
    desired = docs("name: a\ncommand: 'true'\n")
    current = {("Job", "default", "a"): stored("a", command="true", retries=0, overlap="allow")}
    assert plan(desired, current, prune=False) == []


def test_plan_create_update_and_prune_within_the_folders_projects():
    desired = docs("name: a\ncommand: 'true'\nretries: 2\n---\nname: new\ncommand: x\n")
    current = {
        ("Job", "default", "a"): stored("a", command="true"),
        ("Job", "default", "gone"): stored("gone", command="true"),
        ("Job", "other", "kept"): stored("kept", command="true"),
    }
    changes = plan(desired, current, prune=False)
    assert [(c.action, c.name) for c in changes] == [("update", "a"), ("create", "new")]
    assert any("retries: 2" in line for line in changes[0].diff)
    pruned = plan(desired, current, prune=True)
    assert [(c.action, c.project, c.name) for c in pruned] == [
        ("update", "default", "a"),
        ("create", "default", "new"),
        ("delete", "default", "gone"),
    ]


def test_export_writes_minimal_documents_that_plan_to_nothing():
    current = {("Job", "default", "a"): stored("a", command="true", retries=3, tags=[])}
    files = export_files([(JOB, "default", current[("Job", "default", "a")])])
    assert list(files) == ["default/jobs/a.yaml"]
    text = files["default/jobs/a.yaml"]
    assert "created_at" not in text and "overlap" not in text and "retries: 3" in text
    again = parse_documents([("x", text)], "ignored")
    assert plan(again, current, prune=True) == []


def test_notification_rules_written_in_yaml_parse():
    d = docs(
        "name: a\ncommand: x\nnotifications:\n  - on: [failure, recovery]\n"
        "    webhook: {url: 'http://h/', format: slack}\n"
    )
    assert d[0].body["notifications"][0]["on"] == ["failure", "recovery"]
    assert plan(d, {}, prune=False)[0].action == "create"


def test_calendars_and_blackouts_are_kinds_and_defaults_are_not_changes():
    d = docs(
        "kind: Calendar\nname: hol\nholidays: [{country: DE, subdivision: BY}]\n---\n"
        "kind: blackout\nname: w\nstart: 2026-12-24T00:00:00+01:00\nend: 2026-12-27T00:00:00+01:00\n"
    )
    assert [(x.kind.name, x.name) for x in d] == [("Calendar", "hol"), ("Blackout", "w")]
    current = {
        ("Calendar", "default", "hol"): {
            "name": "hol",
            "holidays": [{"country": "DE", "subdivision": "BY"}],
            "dates": [],
            "weekend": ["sat", "sun"],
            "scope": "default",
            "created_at": "x",
            "updated_at": "x",
            "updated_by": "admin",
        },
        ("Blackout", "default", "w"): {
            "name": "w",
            "start": "2026-12-23T23:00:00Z",
            "end": "2026-12-26T23:00:00Z",
            "action": "skip",
            "scope": "default",
        },
    }
    assert plan(d, current, prune=False) == []
    files = export_files([(KINDS["Calendar"], "default", current[("Calendar", "default", "hol")])])
    assert files["default/calendars/hol.yaml"].startswith("kind: Calendar\nproject: default\n")
    assert "weekend" not in files["default/calendars/hol.yaml"]
    assert "updated_by" not in files["default/calendars/hol.yaml"]
