"""The nodes' holds on a project's caps as stored in ``run-admissions/<project>`` (D512): pure
functions, each node's entry read and rewritten with the others kept."""

from __future__ import annotations

import json

from cluster.limits import HOLD_SECONDS, Buckets, Held, others_held, with_mine


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


def test_an_entry_this_version_cannot_read_counts_as_none_and_is_not_an_error():
    """Another version's form or a hand edit must not turn every manual run into a 500 (D520):
    what cannot be read counts as no hold, and the next write of this node drops it."""
    good = {"runs": 2, "places": {"p/": 1}, "until": 200.0}
    for bad in (
        {"runs": "many", "until": 200.0},
        {"until": 200.0},
        {"runs": 1},
        {"runs": 1, "places": ["p/"], "until": 200.0},
        "a string",
        {"runs": 1, "until": "later"},
    ):
        value = json.dumps({"nodes": {"b": good, "z": bad}}).encode()
        assert others_held(value, "a", now=100.0) == Held(2, {"p/": 1}), bad
        kept = with_mine(value, "a", Held(1), now=100.0)
        assert kept is not None and set(json.loads(kept)["nodes"]) == {"a", "b"}, bad
    for junk in (b"not json", b"[1, 2]", b"7", b'{"nodes": [1]}'):
        assert others_held(junk, "a", now=100.0) == Held()
        assert with_mine(junk, "a", Held(), now=100.0) is None


def test_tokens_given_back_are_taken_again_up_to_the_burst():
    """An admission refused after its rate was charged (the 20-try conflict, an etcd error)
    makes no runs: its tokens go back (D520), and the bucket never holds more than its burst."""
    buckets = Buckets()
    assert buckets.take("p", 8, rate=1.0, burst=10, now=0.0) is None
    assert buckets.take("p", 5, rate=1.0, burst=10, now=0.0) == 3.0  # 2 left: 3 s to wait
    buckets.give_back("p", 8)
    assert buckets.take("p", 10, rate=1.0, burst=10, now=0.0) is None  # the 8 came back: 10
    assert buckets.take("p", 1, rate=1.0, burst=10, now=0.0) == 1.0
    buckets.give_back("unknown", 5)  # a project the bucket forgot: nothing to return
    assert buckets.take("unknown", 10, rate=1.0, burst=10, now=0.0) is None
