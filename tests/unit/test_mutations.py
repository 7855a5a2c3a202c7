"""The mutation check's entries (tests/mutations): every pattern still finds its code."""

from __future__ import annotations

import pytest

from tests.mutations import MUTATIONS, ROOT, Mutation, PatternGone, check_patterns, mutate


def test_every_entry_matches_the_code_and_names_existing_tests():
    assert check_patterns(list(MUTATIONS)) == []


def test_names_are_unique_and_the_issue_s_mutations_are_there():
    names = [m.name for m in MUTATIONS]
    assert len(names) == len(set(names))
    assert {"claim-queue-revision", "completion-claim-revision"} <= set(names)
    assert len(MUTATIONS) >= 17


def test_a_pattern_that_no_longer_matches_fails_loudly():
    m = Mutation("x", "f.py", r"compare\(a\)", "pass", ("t.py::test",), "nothing")
    assert mutate(m, "compare(a)\n") == "pass\n"
    with pytest.raises(PatternGone, match="matches 0 time"):
        mutate(m, "compare(b)\n")
    with pytest.raises(PatternGone, match="matches 2 time"):
        mutate(m, "compare(a)\ncompare(a)\n")


def test_docs_list_every_mutation():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    assert [m.name for m in MUTATIONS if f"| `{m.name}` |" not in doc] == []
