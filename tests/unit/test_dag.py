"""Pure DAG decisions with plain values: validation, advancing, rerun sets, admission."""

from __future__ import annotations

import pytest

from cluster.dag import (
    GraphError,
    TaskNode,
    admit,
    advance,
    ancestors,
    build_graph,
    rerun_set,
)
from cluster.errors import InvalidInput


def graph(*specs, edges=()):
    """specs: "name" or ("name", [deps]) or ("name", [deps], rule)."""
    nodes = []
    for s in specs:
        if isinstance(s, str):
            nodes.append(TaskNode(s))
        else:
            nodes.append(TaskNode(s[0], tuple(s[1]), *(s[2:] or ())))
    return build_graph(nodes, edges)


CHAIN = graph("t1", ("t2", ["t1"]), ("t3", ["t2"]), ("t4", ["t3"]), ("t5", ["t4"]))
DIAMOND = graph("a", ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]))


@pytest.mark.parametrize(
    ("nodes", "edges", "field", "message"),
    [
        ([TaskNode("a"), TaskNode("a")], (), "tasks.1.name", "duplicate task name 'a'"),
        ([TaskNode("a", ("a",))], (), "tasks.0.depends_on", "'a' depends on itself"),
        ([TaskNode("a", ("x",))], (), "tasks.0.depends_on", "unknown task 'x'"),
        ([TaskNode("a")], (("a", "a"),), "edges.0", "self-edge"),
        ([TaskNode("a")], (("a", "q"),), "edges.0", "unknown task 'q'"),
        (
            [TaskNode("a", ("b",)), TaskNode("b", ("a",))],
            (),
            "tasks",
            "cycle: a -> b -> a",
        ),
        (
            [TaskNode("root"), TaskNode("x", ("root", "z")), TaskNode("y", ("x",)), TaskNode("z")],
            (("y", "z"),),
            "tasks",
            "cycle: x -> y -> z -> x",
        ),
    ],
)
def test_invalid_graphs_name_the_problem(nodes, edges, field, message):
    with pytest.raises(GraphError) as err:
        build_graph(nodes, edges)
    assert err.value.field == field
    assert message in err.value.message
    assert isinstance(err.value, InvalidInput)


def test_order_is_topological_and_keeps_declared_order_for_ties():
    g = graph(("load", ["t"]), ("t", ["e"]), "e", "other", edges=[("other", "load")])
    assert g.order == ("e", "t", "other", "load")  # ready tasks in declared order
    assert set(g.upstream["load"]) == {"t", "other"}
    assert ancestors(g, "load") == ["e", "t", "other"]


def test_duplicate_dependencies_are_folded():
    g = graph("a", ("b", ["a", "a"]), edges=[("a", "b")])
    assert g.upstream["b"] == ("a",)


@pytest.mark.parametrize(
    ("g", "states", "start", "upstream_failed", "status"),
    [
        (DIAMOND, {}, ["a"], [], "running"),
        (DIAMOND, {"a": "active"}, [], [], "running"),
        (DIAMOND, {"a": "succeeded"}, ["b", "c"], [], "running"),
        (DIAMOND, {"a": "succeeded", "b": "succeeded", "c": "active"}, [], [], "running"),
        (DIAMOND, {"a": "succeeded", "b": "succeeded", "c": "succeeded"}, ["d"], [], "running"),
        # a failed branch: downstream upstream_failed, the other branch still finishes
        (DIAMOND, {"a": "succeeded", "b": "failed", "c": "active"}, [], ["d"], "running"),
        (
            DIAMOND,
            {"a": "succeeded", "b": "timed_out", "c": "succeeded"},
            [],
            ["d"],
            "failed",
        ),
        # failure propagates transitively in one decision
        (CHAIN, {"t1": "succeeded", "t2": "lost"}, [], ["t3", "t4", "t5"], "failed"),
        (
            DIAMOND,
            {n: "succeeded" for n in "abcd"},
            [],
            [],
            "succeeded",
        ),
    ],
)
def test_advance(g, states, start, upstream_failed, status):
    adv = advance(g, states)
    assert adv.start == start
    assert adv.upstream_failed == upstream_failed
    assert adv.status == status


def test_all_done_runs_after_failures_and_upstream_failed():
    g = graph("a", ("b", ["a"]), ("cleanup", ["b"], "all_done"), ("after", ["cleanup"]))
    adv = advance(g, {"a": "failed"})
    assert adv.upstream_failed == ["b"]
    assert adv.start == ["cleanup"]
    assert adv.status == "running"
    # The clean-up succeeded, its own downstream runs; the execution still failed overall.
    adv = advance(g, {"a": "failed", "b": "upstream_failed", "cleanup": "succeeded"})
    assert adv.start == ["after"]
    adv = advance(
        g, {"a": "failed", "b": "upstream_failed", "cleanup": "succeeded", "after": "succeeded"}
    )
    assert adv.status == "failed"


def test_all_done_waits_for_every_upstream():
    g = graph("a", "b", ("c", ["a", "b"], "all_done"))
    assert advance(g, {"a": "failed", "b": "active"}).start == []
    assert advance(g, {"a": "failed", "b": "succeeded"}).start == ["c"]


def test_cancel_stops_pending_tasks_and_waits_for_active_ones():
    adv = advance(DIAMOND, {"a": "succeeded", "b": "active"}, cancelled=True)
    assert adv.start == [] and adv.cancel == ["c", "d"] and adv.status == "running"
    adv = advance(
        DIAMOND,
        {"a": "succeeded", "b": "cancelled", "c": "cancelled", "d": "cancelled"},
        cancelled=True,
    )
    assert adv.status == "cancelled"


@pytest.mark.parametrize(
    ("kw", "states", "expected"),
    [
        ({"from_task": "t3"}, {}, {"t3", "t4", "t5"}),
        ({"from_task": "t1"}, {}, {"t1", "t2", "t3", "t4", "t5"}),
        (
            {"failed_only": True},
            {"t1": "succeeded", "t2": "succeeded", "t3": "failed", "t4": "upstream_failed"},
            {"t3", "t4", "t5"},
        ),
        ({"failed_only": True}, {n: "succeeded" for n in ("t1", "t2", "t3", "t4", "t5")}, set()),
        ({}, {}, {"t1", "t2", "t3", "t4", "t5"}),
    ],
)
def test_rerun_sets(kw, states, expected):
    assert rerun_set(CHAIN, states, **kw) == expected


def test_rerun_failed_only_in_a_diamond_keeps_the_good_branch():
    states = {"a": "succeeded", "b": "failed", "c": "succeeded", "d": "upstream_failed"}
    assert rerun_set(DIAMOND, states, failed_only=True) == {"b", "d"}
    with pytest.raises(InvalidInput) as err:
        rerun_set(DIAMOND, states, from_task="zz")
    assert err.value.field == "from_task"


@pytest.mark.parametrize(
    ("queued", "running", "limit", "expected"),
    [
        ([(0, "003"), (0, "001"), (0, "002")], 0, 0, ["001", "002", "003"]),
        ([(0, "003"), (0, "001"), (0, "002")], 0, 2, ["001", "002"]),
        ([(0, "001"), (5, "009")], 1, 2, ["009"]),
        ([(0, "001")], 2, 2, []),
        ([(0, "001")], 3, 2, []),
    ],
)
def test_admit_higher_priority_then_oldest(queued, running, limit, expected):
    assert admit(queued, running, limit) == expected
