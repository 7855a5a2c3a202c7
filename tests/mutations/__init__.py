"""The mutation check: the suite must fail when a safety check is removed (issue 25, D175).

Each :class:`Mutation` names one compare or check a guarantee rests on, finds it in the code by
a regular expression (so it survives reformatting and moves within the file; if the pattern no
longer matches exactly ``count`` times the check FAILS, asking for the entry to be updated),
replaces it in a temporary copy of the code and runs the tests named for it there. A mutation is
*caught* when those tests fail (pytest exit code 1); anything else (they pass, or pytest could
not even run them) fails the check.

    python -m tests.mutations              # every mutation, 2 at a time
    python -m tests.mutations --list       # names, files and catching tests
    python -m tests.mutations claim-queue-revision completion-claim-revision
    python -m tests.mutations --patterns   # only check that every pattern still matches

The entries are kept by area, one file each, by what they target: ``worker.py`` (claims,
completions, budgets), ``leader.py`` (fenced and compared writes), ``scheduling.py`` (ticks,
tasks, election, shards), ``containment.py`` (a run's process, output and what it leaves),
``access.py`` (roles, tokens, quotas, hooks) and ``ownclaims.py`` (the leader's own claims, D444).
Adding a mutation is one entry in its area's ``MUTATIONS`` (and a row in docs/reliability.md).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.mutations import access, containment, leader, ownclaims, scheduling, worker
from tests.mutations.entry import Mutation, PatternGone

ROOT = Path(__file__).resolve().parents[2]
# what a copy needs to import and test the code (docs, .git and the venv stay behind)
COPIED = ("cluster", "nodes", "logstore", "tests", "bench", "helm", "pyproject.toml")

AREAS = (worker, leader, scheduling, containment, access, ownclaims)
MUTATIONS: tuple[Mutation, ...] = tuple(m for area in AREAS for m in area.MUTATIONS)


def by_name(names: list[str]) -> list[Mutation]:
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown mutation(s): {', '.join(unknown)}; see --list")
    return [known[n] for n in names] if names else list(MUTATIONS)


def mutate(m: Mutation, text: str) -> str:
    """``text`` with the mutation applied; PatternGone unless it matches ``count`` times."""
    found = len(re.findall(m.pattern, text, flags=re.S))
    if found != m.count:
        raise PatternGone(
            f"{m.name}: the pattern matches {found} time(s) in {m.file}, expected {m.count}; "
            "the code changed: update this entry (its area's file in tests/mutations/)"
        )
    return re.sub(m.pattern, m.replacement, text, flags=re.S)


def check_patterns(mutations: list[Mutation], root: Path = ROOT) -> list[str]:
    """Problems with the entries themselves (pattern gone, mutation a no-op, tests missing)."""
    problems = []
    for m in mutations:
        text = (root / m.file).read_text()
        try:
            if mutate(m, text) == text:
                problems.append(f"{m.name}: the replacement changes nothing")
        except PatternGone as exc:
            problems.append(str(exc))
        for test in m.tests:
            path, _, func = test.partition("::")
            target = root / path
            if not target.exists() or f"def {func.split('[')[0]}(" not in target.read_text():
                problems.append(f"{m.name}: catching test {test} not found")
    return problems


def mutated_copy(m: Mutation, dest: Path, root: Path = ROOT) -> Path:
    """A copy of the code under ``dest`` with ``m`` applied.

    The bytecode caches come along (D327): every mutant's pytest and the node processes it
    starts would otherwise compile the whole code base again. A cached ``.pyc`` is used only
    while it matches its source's mtime and size (``copy2`` keeps both), and the mutated file's
    own is removed, so the mutant is always compiled from the mutated source."""
    ignore = shutil.ignore_patterns(".pytest_cache", "node_modules")
    for name in COPIED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore, symlinks=True)
        elif src.exists():
            shutil.copy2(src, dest / name)
    target = dest / m.file
    target.write_text(mutate(m, target.read_text()))
    for cached in (target.parent / "__pycache__").glob(f"{target.stem}.*.pyc"):
        cached.unlink()
    return dest
