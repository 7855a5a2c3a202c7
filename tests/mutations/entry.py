"""One entry of the mutation table (D175); the entries are in the area files of this package."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository root
    pattern: str  # a regular expression (re.S: ``.`` crosses lines)
    replacement: str  # re.sub replacement (``\1`` etc.)
    tests: tuple[str, ...]  # pytest node ids that must fail with the mutation
    guards: str  # the guarantee, in a few words (docs/reliability.md lists it)
    count: int = 1  # how many matches the pattern must have (all are replaced)


class PatternGone(Exception):
    """The code moved on: the pattern no longer matches as the entry says."""
