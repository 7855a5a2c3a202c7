"""Caps on what operators can make the cluster store: manual runs per second and unfinished runs
per project (D173). Pure decisions with an injected clock; the API reads the settings and counts.

Operators (and anyone above) create runs without limit otherwise: triggers with large parameters,
backfills of 1000 ticks each, in a loop, until etcd's quota stops every write of every project.
The caps apply to runs people ask for (trigger, backfill, workflow start and rerun), never to
scheduled ticks: the leader's runs are bounded by the schedules editors wrote and by each job's
overlap policy, and a tick refused for a cap would be lost (D173).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cluster.errors import CronmeshError, QuotaExceeded, TooManyRequests

# The parameters one trigger may add to a run (names + values, UTF-8): 16 KiB. A run's record is
# written twice (run, queue entry), so a trigger stores at most ~32 KiB plus the job's snapshot.
MAX_RUN_PARAMETER_BYTES = 16 * 1024
MAX_BUCKETS = 10_000


class RunLimits(BaseModel):
    """Cluster defaults (``settings/run-limits``) or one project's overrides (unset: default)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_pending_runs: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="unfinished runs (pending or running) a project may have before manual "
        "runs are refused",
    )
    runs_per_second: float | None = Field(
        default=None, gt=0, le=10_000, description="manual runs a project may start per second"
    )
    run_burst: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="how many manual runs may start at once (a backfill counts each tick)",
    )


DEFAULT_LIMITS = RunLimits(max_pending_runs=2000, runs_per_second=5.0, run_burst=1000)


def effective(cluster: RunLimits | None, project: RunLimits | None) -> RunLimits:
    """Each limit from the project's override, else the cluster's setting, else the default."""
    out = DEFAULT_LIMITS.model_dump()
    for layer in (cluster, project):
        if layer is not None:
            out.update(layer.model_dump(exclude_none=True))
    return RunLimits(**out)


def parameter_bytes(parameters: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in parameters.items())


def check_pending(project: str, unfinished: int, adding: int, cap: int, held: int = 0) -> None:
    """Refuse ``adding`` more runs when the project would then hold more than ``cap``, counting
    the ``held`` runs other requests were admitted for and are writing (D512)."""
    if unfinished + held + adding > cap:
        also = f" (and {held} being created)" if held else ""
        raise QuotaExceeded(
            f"project {project!r} has {unfinished} unfinished runs{also}; {adding} more would "
            f"pass its cap max_pending_runs={cap} (wait for runs to finish, or ask a cluster "
            "admin)",
            field="max_pending_runs",
        )


# What the nodes hold against a project's caps (D512), ``run-admissions/<project>``: per node,
# the runs it admitted and is still writing, the places it holds in other counts (``Counted``,
# by prefix) and until when the entry stands (a node that died leaves it until then). A node
# rewrites its own entry as its admissions start; it counts its own holds from memory.
HOLD_SECONDS = 120.0


@dataclass(frozen=True)
class Counted:
    """Another count an admission holds a place in until its write: the keys under ``prefix``
    (one more each), at most ``cap``; ``refusal(held)`` is raised at the cap (D513)."""

    prefix: str
    cap: int
    refusal: Callable[[int], CronmeshError]


@dataclass
class Held:
    """One node's holds on one project: runs, and places by ``Counted.prefix``."""

    runs: int = 0
    places: dict[str, int] = field(default_factory=dict)

    def add(self, runs: int, place: str | None, sign: int = 1) -> None:
        self.runs += sign * runs
        if place is not None:
            self.places[place] = self.places.get(place, 0) + sign
            if not self.places[place]:
                del self.places[place]

    def plus(self, other: Held) -> Held:
        places = dict(self.places)
        for prefix, n in other.places.items():
            places[prefix] = places.get(prefix, 0) + n
        return Held(self.runs + other.runs, places)

    def empty(self) -> bool:
        return not self.runs and not self.places


def others_held(value: bytes | None, me: str, now: float) -> Held:
    """What the other nodes' entries that stand at ``now`` hold, summed."""
    out = Held()
    for node, held in _standing(value, now).items():
        if node != me:
            out = out.plus(held)
    return out


def with_mine(value: bytes | None, me: str, mine: Held, now: float) -> str | None:
    """The value with this node's entry set to ``mine`` (gone when it holds nothing) and
    lapsed entries dropped; None when no entry is left (the key goes)."""
    entries: dict[str, dict[str, Any]] = {
        n: {"runs": h.runs, "places": h.places, "until": until}
        for n, (h, until) in _read(value, now).items()
        if n != me
    }
    if not mine.empty():
        entries[me] = {"runs": mine.runs, "places": mine.places, "until": now + HOLD_SECONDS}
    return json.dumps({"nodes": entries}) if entries else None


def _standing(value: bytes | None, now: float) -> dict[str, Held]:
    return {n: h for n, (h, _) in _read(value, now).items()}


def _read(value: bytes | None, now: float) -> dict[str, tuple[Held, float]]:
    """Each node's entry that stands at ``now``, with its ``until``. An entry this version
    cannot read (another version's form, a hand edit) counts as none rather than answering
    every manual run with a 500: its own node writes it again with its next admission (D520)."""
    try:
        nodes = json.loads(value).get("nodes") if value else None
    except (ValueError, AttributeError):
        return {}
    out: dict[str, tuple[Held, float]] = {}
    for node, entry in (nodes if isinstance(nodes, dict) else {}).items():
        try:
            until = float(entry["until"])
            if not until > now:
                continue
            places = {str(p): int(n) for p, n in entry.get("places", {}).items()}
            out[str(node)] = (Held(int(entry["runs"]), places), until)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return out


class Buckets:
    """Token buckets per project: ``rate`` runs per second, at most ``burst`` at once."""

    def __init__(self) -> None:
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, project: str, cost: int, rate: float, burst: int, now: float) -> float | None:
        """Take ``cost`` tokens; None when granted, else the seconds until it could be."""
        tokens, at = self._state.get(project, (float(burst), now))
        tokens = min(float(burst), tokens + max(0.0, now - at) * rate)
        if cost > burst:  # can never be granted at these settings: say so, not "retry"
            return math.inf
        if tokens >= cost:
            self._state[project] = (tokens - cost, now)
            self._state.move_to_end(project)
            while len(self._state) > MAX_BUCKETS:
                self._state.popitem(last=False)
            return None
        self._state[project] = (tokens, now)
        return (cost - tokens) / rate

    def give_back(self, project: str, cost: int) -> None:
        """Return ``cost`` tokens taken for runs that were then not made (``take`` caps the
        bucket at its burst again)."""
        if project in self._state:
            tokens, at = self._state[project]
            self._state[project] = (tokens + cost, at)

    def admit(
        self, project: str, cost: int, limits: RunLimits, now: float, what: str = "runs"
    ) -> None:
        """Raise ``TooManyRequests`` (429 with Retry-After) when the project is over its rate."""
        rate = limits.runs_per_second or DEFAULT_LIMITS.runs_per_second or 1.0
        burst = limits.run_burst or DEFAULT_LIMITS.run_burst or 1
        wait = self.take(project, cost, rate, burst, now)
        if wait is None:
            return
        if math.isinf(wait):
            raise QuotaExceeded(
                f"{cost} {what} at once exceed project {project!r}'s run_burst={burst}; "
                "ask for fewer",
                field="run_burst",
            )
        raise TooManyRequests(
            f"project {project!r} starts too many runs (runs_per_second={rate:g}, "
            f"run_burst={burst}); retry in {math.ceil(wait)} s",
            retry_after=wait,
            field="runs_per_second",
        )
