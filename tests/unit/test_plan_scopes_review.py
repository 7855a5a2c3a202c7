"""Review of the calendars branch (D287): which jobs ``GET /api/v1/plan`` reads. Without
``project`` it read every project's jobs and kept those the caller may view, so a viewer of one
small project made the node read and parse the whole cluster's jobs on every call (and before
the two-plans-at-once limit was taken). It now reads only the prefixes the caller may see."""

from __future__ import annotations

from nodes.api.plan import all_projects, scopes


def test_a_viewer_of_some_projects_reads_only_those():
    grants = {"mine": "viewer", "ours": "editor"}
    assert scopes(grants, None) == ["mine", "ours"]
    assert not all_projects(grants)


def test_a_cluster_wide_role_reads_every_project():
    assert scopes({"*": "viewer"}, None) == [None]
    assert scopes({"*": "admin", "mine": "viewer"}, None) == [None]


def test_a_named_project_is_read_alone():
    assert scopes({"*": "admin"}, "p") == ["p"]
    assert scopes({"p": "viewer", "q": "viewer"}, "p") == ["p"]


def test_no_grant_reads_nothing():
    assert scopes({}, None) == []
    assert scopes({"mine": "nonsense"}, None) == []
