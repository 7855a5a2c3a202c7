"""The nodes' holds on a project's caps as stored in ``run-admissions/<project>`` (D512): pure
functions, each node's entry read and rewritten with the others kept."""

from __future__ import annotations

import json

from cluster.limits import HOLD_SECONDS, Held, others_held, with_mine


def test_a_node_counts_the_others_entries_that_stand_and_writes_only_its_own():
    value = with_mine(None, "a", Held(3, {"p/": 1}), now=100.0)
    assert value is not None
    value = with_mine(value.encode(), "b", Held(2, {"p/": 2, "q/": 1}), now=110.0)
    assert value is not None
    assert others_held(value.encode(), "c", now=111.0) == Held(5, {"p/": 3, "q/": 1})
    assert others_held(value.encode(), "a", now=111.0) == Held(2, {"p/": 2, "q/": 1})
    # a's entry lapses HOLD_SECONDS after a wrote it (its node died): b's stands longer
    assert others_held(value.encode(), "c", now=100.0 + HOLD_SECONDS) == Held(2, {"p/": 2, "q/": 1})
    # a node that holds nothing leaves no entry; no entry left: the key goes
    left = with_mine(value.encode(), "a", Held(), now=111.0)
    assert left is not None and set(json.loads(left)["nodes"]) == {"b"}
    assert with_mine(left.encode(), "b", Held(), now=111.0) is None


def test_holds_add_and_release_by_place():
    held = Held()
    held.add(2, "p/")
    held.add(1, None)
    assert held.plus(Held(1, {"p/": 1, "q/": 1})) == Held(4, {"p/": 2, "q/": 1})
    held.add(2, "p/", -1)
    held.add(1, None, -1)
    assert held.empty() and held == Held()
