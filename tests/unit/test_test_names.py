"""The test folders are not packages: two test files with one basename break the collection of the
whole suite (pytest's "import file mismatch"), though each passes when run alone. (Files in the
folders that are packages, with an `__init__.py`, import under their full name and may share one.)"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_has_a_basename_of_its_own() -> None:
    names = Counter(
        p.name
        for p in TESTS.rglob("test_*.py")
        if "__pycache__" not in p.parts and not (p.parent / "__init__.py").exists()
    )
    assert [name for name, n in names.items() if n > 1] == []
