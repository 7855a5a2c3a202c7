"""Attempts of one run never overlap in time (docs/reliability.md, self-fencing, D152).

The job records what it does in the shared history file (``tests.chaos.harness``), with
``CLOCK_REALTIME`` of the one machine every node runs on: its start, a *beat* every ``beat``
seconds while it works, its end. An attempt killed half-way leaves no end line: its last line is
the last thing it did. The time range of an attempt is its first to its last line; the attempts of
one run must be disjoint: each attempt's first line later than the previous attempt's last one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from tests.chaos.harness import Execution, read_history


def beating_command(path: Path, work: float, beat: float = 0.05) -> str:
    """Like ``history_command``, plus a ``beat`` line every ``beat`` s of its ``work``."""
    fields = (
        '"$CRONMESH_JOB" "${CRONMESH_SCHEDULED_AT:--}" "$CRONMESH_RUN_ID" "$CRONMESH_ATTEMPT" '
        '"$CRONMESH_CLAIM_REVISION" "$CRONMESH_NODE"'
    )
    line = f"printf '%s %s %s %s %s %s %s %s\\n' PHASE {fields} \"$(date +%s.%N)\" >> {path}"
    loop = (
        f"end=$(( $(date +%s%N) + {int(work * 1e9)} )); "
        f'while [ "$(date +%s%N)" -lt "$end" ]; do sleep {beat:g}; '
        f"{line.replace('PHASE', 'beat')}; done"
    )
    return f"{line.replace('PHASE', 'start')}; {loop}; {line.replace('PHASE', 'end')}"


@dataclass
class OverlapReport:
    attempts: int = 0  # attempts (run, claim revision) seen in the history
    runs_with_retries: int = 0
    overlaps: list[str] = field(default_factory=list)  # "run: a@rev/node [x, y] ∩ b@rev/node …"
    min_gap: float | None = None  # smallest gap between consecutive attempts of a run (s)

    @property
    def ok(self) -> bool:
        return not self.overlaps

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "attempts": self.attempts,
            "runs_with_retries": self.runs_with_retries,
            "overlaps": self.overlaps,
            "min_gap_s": None if self.min_gap is None else round(self.min_gap, 3),
        }


def check_overlaps(history: list[Execution]) -> OverlapReport:
    """Every two attempts of one run are disjoint in time (first line to last line)."""
    spans: dict[str, dict[tuple[int, str], list[float]]] = {}
    for e in history:
        span = spans.setdefault(e.run, {}).setdefault((e.claim_revision, e.node), [e.at, e.at])
        span[0], span[1] = min(span[0], e.at), max(span[1], e.at)
    report = OverlapReport()
    for run, attempts in sorted(spans.items()):
        report.attempts += len(attempts)
        if len(attempts) < 2:
            continue
        report.runs_with_retries += 1
        ordered = sorted(attempts.items(), key=lambda kv: kv[1][0])
        for (a, (_, a_end)), (b, (b_start, b_end)) in pairwise(ordered):
            gap = b_start - a_end
            report.min_gap = gap if report.min_gap is None else min(report.min_gap, gap)
            if gap <= 0:
                report.overlaps.append(
                    f"{run}: @{a[0]}/{a[1]} ran until {a_end:.3f}, "
                    f"@{b[0]}/{b[1]} ran {b_start:.3f}..{b_end:.3f}"
                )
    return report


def check_file(path: Path) -> OverlapReport:
    return check_overlaps(read_history(path))
