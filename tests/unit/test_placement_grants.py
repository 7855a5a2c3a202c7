"""Grants (D155) with plain values: a project reaches the groups granted to it and the shared nodes,
never a node reserved by groups granted only to others."""

from __future__ import annotations

import pytest

from cluster.groups import granted_projects, is_granted
from cluster.placement import Binding, NodeView, Topology, place

NODES = {n: NodeView(n, {"zone": "eu1"}) for n in ("a1", "b1", "both", "shared", "open")}
GROUPS = {
    "ga": (["a"], [("x", "a1"), ("y", "both")]),
    "gb": (["b"], [("x", "b1"), ("y", "both")]),
    "all": (["*"], [("x", "open")]),
    "nobody": ([], [("x", "a1")]),
}


def topo(groups: dict[str, tuple[list[str], list[tuple[str, str]]]] = GROUPS) -> Topology:
    return Topology(
        NODES,
        frozenset(groups),
        {g: tuple(Binding(g, b, n, 1) for b, n in bs) for g, (_, bs) in groups.items()},
        {g: frozenset(ps) for g, (ps, _) in groups.items()},
    )


def reach(group: str | None, selector: str, project: str | None) -> list[tuple[str, str | None]]:
    return [(c.node, c.grant) for c in place(group, selector, topo(), project).candidates]


@pytest.mark.parametrize(
    ("group", "project", "expected"),
    [
        ("ga", "a", [("a1", "ga"), ("both", "ga")]),
        ("gb", "b", [("b1", "gb"), ("both", "gb")]),
        ("all", "a", [("open", "all")]),
        ("all", "zzz", [("open", "all")]),
        ("ga", "b", []),
        ("nobody", "a", []),
        ("ga", None, [("a1", None), ("both", None)]),  # an operator's question: no project check
    ],
)
def test_a_group_target_needs_a_grant(group, project, expected):
    assert reach(group, "", project) == expected


def test_the_refusal_names_the_group_and_project():
    p = place("gb", "", topo(), "a")
    assert p.reason == "no eligible node: group 'gb' is not granted to project 'a'"


@pytest.mark.parametrize(
    ("project", "expected"),
    [
        # shared nodes (bound to no group), plus what the project's grants reach, named by group
        ("a", [("a1", "ga"), ("both", "ga"), ("open", "all"), ("shared", None)]),
        ("b", [("b1", "gb"), ("both", "gb"), ("open", "all"), ("shared", None)]),
        ("c", [("open", "all"), ("shared", None)]),
        (None, [(n, None) for n in sorted(NODES)]),
    ],
)
def test_a_selector_reaches_only_shared_and_granted_nodes(project, expected):
    assert reach(None, "zone=eu1", project) == expected


def test_a_selector_aimed_at_another_projects_node_says_why():
    p = place(None, "zone=eu1", topo({"gb": (["b"], [("x", "b1")])}), "a")
    assert [c.node for c in p.candidates] == ["a1", "both", "open", "shared"]
    only_b = Topology(
        {"b1": NODES["b1"]}, frozenset({"gb"}), {"gb": (Binding("gb", "x", "b1"),)}, {"gb": {"b"}}
    )
    p = place(None, "", only_b, "a")
    assert p.candidates == ()
    assert p.reason == "no eligible node: b1 is reserved by groups not granted to project 'a'"


def test_a_group_deleted_leaves_its_nodes_shared():
    # bindings of a group that is gone (deleted in the same transaction, seen by a lagging view)
    # do not reserve a node
    t = Topology(NODES, frozenset(), {"gb": (Binding("gb", "x", "b1"),)}, {})
    assert "b1" in [c.node for c in place(None, "", t, "a").candidates]


@pytest.mark.parametrize(
    ("doc", "projects"),
    [
        ({"name": "g"}, {"*"}),  # written before grants existed: open, as it was
        ({"name": "g", "projects": []}, set()),
        ({"name": "g", "projects": ["a", "b"]}, {"a", "b"}),
    ],
)
def test_group_records_read_as_grants(doc, projects):
    assert granted_projects(doc) == projects
    assert is_granted(granted_projects(doc), "a") == bool({"a", "*"} & projects)
