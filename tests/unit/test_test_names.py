"""The test folders are not packages: two test files with one basename break the collection of the
whole suite (pytest's "import file mismatch"), though each passes when run alone."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_has_a_basename_of_its_own() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py") if "__pycache__" not in p.parts)
    assert [name for name, n in names.items() if n > 1] == []
