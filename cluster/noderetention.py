"""How long a node that is down stays listed (issue 22, D255): pure decisions.

A node's last record (``node-info/<id>``) outlives it so ``cronmesh nodes list`` can show it
``down``. After ``node_retention`` seconds down it is forgotten, as ``cronmesh nodes forget``
does by hand. When it went down is its ``stopped_at`` (a graceful stop writes it) or, for a node
that died, the ``down_since`` the leader writes the first time it sees the record without a live
node (so the clock starts at most one sweep late, never early).

A node an operator disabled or drained is never forgotten by the sweep (D281): its admin state
is the operator's wish that it takes no runs, and it "survives restarts of the node"
(docs/placement.md); deleting it after a day down would let the machine run jobs again the next
time it boots. It stays listed, down, until an operator enables or forgets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class NodeSweep:
    mark: list[str] = field(default_factory=list)  # down, no time yet: write down_since = now
    forget: list[str] = field(default_factory=list)  # down for longer than the retention


def down_since(record: Mapping[str, Any]) -> datetime | None:
    """When the node went down, from its record (None: not known yet, or unreadable)."""
    times = []
    for key in ("stopped_at", "down_since"):
        raw = record.get(key)
        if not isinstance(raw, str):
            continue
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            continue
        times.append(when if when.tzinfo else when.replace(tzinfo=UTC))
    return min(times) if times else None


def held(state: Mapping[str, Any] | None) -> bool:
    """Does a node's admin state (``node-state/<id>``, None: none) keep it from being forgotten:
    anything but ``enabled`` (an unreadable state counts as held: never lift a wish unread)."""
    if state is None:
        return False
    return bool(state.get("admin", "enabled") != "enabled")


def sweep(
    records: Mapping[str, Mapping[str, Any]],
    live: set[str],
    now: datetime,
    retention: float,
    kept: frozenset[str] | set[str] = frozenset(),
) -> NodeSweep:
    """What to do with each node record: nothing (up, or not down long enough), mark or forget.
    ``retention`` 0 keeps every node forever; nodes in ``kept`` (:func:`held`) are marked but
    never forgotten."""
    out = NodeSweep()
    if retention <= 0:
        return out
    for node in sorted(records):
        if node in live:
            continue
        since = down_since(records[node])
        if since is None:
            out.mark.append(node)
        elif now - since >= timedelta(seconds=retention) and node not in kept:
            out.forget.append(node)
    return out


def sweep_every(retention: float) -> float:
    """Seconds between sweeps: a quarter of the retention, between 1 s and 5 minutes."""
    return min(300.0, max(1.0, retention / 4))
