"""Budgets: named, cluster-wide limits on how many runs start per window and how many run at once
(issue 24 item 3, D274-D279). The documents and the pure decisions; no I/O.

A run joins the budgets its job (or workflow task) names in ``budgets`` and every budget whose
``match.tags`` shares a tag with the job's ``tags``. Every budget it joins must admit it:

* ``concurrent: M`` — M slot keys ``budget-slots/<b>/<i>``, ``i < M``; a claim takes a free one
  (compare absent, put bound to the claimer's lease) and the run's completion deletes it, as does
  the lease's expiry when the node dies.
* ``starts: {per, limit}`` — one key ``budget-starts/<b>`` holding ``{"start": <epoch s>,
  "count": n}`` of the current fixed window; a claim compares its mod revision and writes the
  count plus one (or a new window with count 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from cluster.fields import Name, Strict

MAX_CONCURRENT = 1000  # slot keys of one budget (a claim reads them from a cache, never scans)
MAX_PER_RUN = 8  # budgets one job or task may join by name
MAX_MATCH_TAGS = 16
MAX_WINDOW = 7 * 86400  # s: the longest window given as a number of seconds
WINDOWS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}

Tag = Annotated[str, Field(min_length=1, max_length=64)]
BudgetNames = Annotated[list[Name], Field(default_factory=list, max_length=MAX_PER_RUN)]


class StartsLimit(Strict):
    """At most ``limit`` starts per fixed window of ``per`` (minute, hour, day, or seconds)."""

    per: Literal["second", "minute", "hour", "day"] | Annotated[int, Field(ge=1, le=MAX_WINDOW)]
    limit: int = Field(ge=1, le=1_000_000)

    @property
    def seconds(self) -> int:
        return WINDOWS[self.per] if isinstance(self.per, str) else self.per


class BudgetMatch(Strict):
    tags: list[Tag] = Field(min_length=1, max_length=MAX_MATCH_TAGS)


class BudgetSpec(Strict):
    """What a cluster admin writes: ``PUT /api/v1/budgets/{name}``."""

    name: Name
    description: str = Field(default="", max_length=1024)
    starts: StartsLimit | None = None
    concurrent: int | None = Field(default=None, ge=1, le=MAX_CONCURRENT)
    match: BudgetMatch | None = None
    # the projects whose jobs may join (by name or tag); None: every project (D274)
    projects: list[Name] | None = Field(default=None, min_length=1, max_length=1000)

    def admits(self, project: str) -> bool:
        return self.projects is None or project in self.projects

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetSpec:
        if self.starts is None and self.concurrent is None:
            raise ValueError("a budget needs 'starts', 'concurrent' or both")
        return self


class Budget(BudgetSpec):
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = None


class Window(BaseModel):
    """The stored state of a budget's current start window."""

    start: int  # epoch seconds, a multiple of the window's length
    count: int = 0


# -- window arithmetic ---------------------------------------------------------------------------


def window_start(now: datetime, seconds: int) -> int:
    """The epoch second the fixed window holding ``now`` began (windows are aligned to the Unix
    epoch, so a day is a UTC day and every node computes the same window)."""
    return math.floor(now.timestamp() / seconds) * seconds


@dataclass(frozen=True, slots=True)
class StartVerdict:
    ok: bool
    window: Window  # the state to write when the claim succeeds (ok) or the current one
    next_at: datetime | None = None  # not ok: when the next start is allowed


def admit_start(current: Window | None, limit: StartsLimit, now: datetime) -> StartVerdict:
    """Whether one more start fits the window of ``now``; a stored window that ended counts as
    empty (no cleanup is needed: the next start overwrites it)."""
    seconds = limit.seconds
    start = window_start(now, seconds)
    count = current.count if current is not None and current.start == start else 0
    if count < limit.limit:
        return StartVerdict(True, Window(start=start, count=count + 1))
    nxt = datetime.fromtimestamp(start + seconds, UTC)
    return StartVerdict(False, Window(start=start, count=count), nxt)


# -- which budgets a run joins, and whether they admit it -----------------------------------------


def joined(
    budgets: Mapping[str, BudgetSpec], names: Iterable[str], tags: Iterable[str], project: str
) -> list[str]:
    """The budgets a job of ``project`` with ``budgets: names`` and ``tags`` joins, sorted. A
    name no longer defined is ignored (deletion is refused while a job names it, so this is a
    transient); a named budget whose ``projects`` no longer include the project is still
    joined, and :func:`check` holds the run back (a limit is never silently dropped). A tag
    joins only budgets open to the project."""
    tagset = set(tags)
    out = {n for n in names if n in budgets}
    for name, b in budgets.items():
        if b.match is not None and tagset.intersection(b.match.tags) and b.admits(project):
            out.add(name)
    return sorted(out)


def free_slot(concurrent: int, held: Iterable[int]) -> int | None:
    """The lowest slot index below ``concurrent`` not held (None: every slot is taken)."""
    taken = set(held)
    for i in range(concurrent):
        if i not in taken:
            return i
    return None


@dataclass(frozen=True, slots=True)
class Wait:
    budget: str
    reason: str  # "budget b: 3/3 running" or "budget b: 10/10 starts per minute, next at …"
    next_at: datetime | None = None


def per_text(limit: StartsLimit) -> str:
    return limit.per if isinstance(limit.per, str) else f"{limit.per}s"


def check(
    name: str,
    budget: BudgetSpec,
    held: int,
    window: Window | None,
    now: datetime,
    project: str,
) -> Wait | None:
    """Why budget ``name`` does not admit one more start of a run of ``project`` now (None: it
    does). ``held``: slots in use; ``window``: the stored start window."""
    if not budget.admits(project):
        return Wait(name, f"budget {name}: not open to project {project}")
    if budget.concurrent is not None and held >= budget.concurrent:
        return Wait(name, f"budget {name}: {held}/{budget.concurrent} running")
    if budget.starts is not None:
        verdict = admit_start(window, budget.starts, now)
        if not verdict.ok:
            at = verdict.next_at
            when = at.isoformat() if at else "?"
            return Wait(
                name,
                f"budget {name}: {verdict.window.count}/{budget.starts.limit} starts per "
                f"{per_text(budget.starts)}, next start allowed at {when}",
                at,
            )
    return None


def retry_in(wait: Wait, now: datetime) -> float | None:
    """Seconds until a start-window wait may pass (None: it waits for a slot, i.e. a watch)."""
    if wait.next_at is None:
        return None
    return max(0.0, (wait.next_at - now) / timedelta(seconds=1))
