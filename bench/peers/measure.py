"""Pure arithmetic of the side-by-side benchmark: attributing run starts to the clock grid, lag,
missed and duplicate ticks, bursts, the ratios cronmesh/peer and the printed table.

Every system is measured the same way: a run's *start* is the time its job noted just before
spawning ``sh -c true`` (cronmesh: ``started_at`` of the run record; a peer: the time its task
wrote to a file, see ``bench.peers.task``). Lag = start - the exact tick on the clock grid.

cronmesh's run records carry their tick (``scheduled_at``). A peer's task does not know which
tick it serves, so a start is attributed to the whole second at or before it (``floor``): a peer
run more than one second late is counted in a later second, which then shows a duplicate and the
earlier second a miss. So a peer's lag is capped below 1 s, and lateness beyond that shows up
in its missed and duplicate counts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.stats import summary_ms

Start = tuple[str, float]  # (job name, unix time of the start)


def periodic(starts: Iterable[Start], jobs: Sequence[str], t0: int, t1: int) -> dict[str, Any]:
    """Jobs due every whole second: starts of the ticks in [t0, t1), their lag, misses and
    duplicates, and starts per second."""
    wanted = set(jobs)
    per_tick: Counter[tuple[str, int]] = Counter()
    lags: list[float] = []
    for name, ts in starts:
        tick = math.floor(ts)
        if name in wanted and t0 <= tick < t1:
            per_tick[(name, tick)] += 1
            lags.append(ts - tick)
    window = t1 - t0
    expected = len(wanted) * window
    runs = sum(per_tick.values())
    return {
        "window_s": window,
        "expected_ticks": expected,
        "runs": runs,
        "started_per_s": round(runs / window, 1) if window else 0.0,
        "missed_ticks": expected - len(per_tick),
        "duplicate_ticks": sum(1 for c in per_tick.values() if c > 1),
        "extra_runs": sum(c - 1 for c in per_tick.values() if c > 1),
        "start_lag": summary_ms(lags),
    }


def sustained(level: Mapping[str, Any], offered: int) -> bool:
    """A level is sustained when at least 95 % of the offered runs started in the window."""
    return bool(level["runs"] >= 0.95 * offered * level["window_s"])


def best_sustained(levels: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    ok = [lv for lv in levels if lv["sustained"]]
    return {
        "max_sustained_per_s": max((lv["started_per_s"] for lv in ok), default=0.0),
        "max_sustained_offered": max((lv["jobs"] for lv in ok), default=0),
        "peak_started_per_s": max((lv["started_per_s"] for lv in levels), default=0.0),
    }


def burst(starts: Iterable[Start], jobs: Sequence[str], due: float) -> dict[str, Any]:
    """Jobs all due at ``due``: how many started (once, twice), and when, counted from ``due``."""
    wanted = set(jobs)
    seen: Counter[str] = Counter()
    after: list[float] = []
    for name, ts in starts:
        if name in wanted:
            seen[name] += 1
            after.append(ts - due)
    after.sort()
    missed = len(wanted) - len(seen)
    return {
        "jobs": len(wanted),
        "started": len(seen),
        "missed": missed,
        "duplicates": sum(1 for c in seen.values() if c > 1),
        "early_starts": sum(1 for a in after if a < 0),
        "first_start_s": round(after[0], 3) if after else None,
        # None when some job never started: "all started after x s" would be false
        "all_started_s": round(after[-1], 3) if after and missed == 0 else None,
        "start_after_due": summary_ms(after),
    }


# -- DAGs ----------------------------------------------------------------------------------------

Stamps = Mapping[str, tuple[float, float]]  # task → (start, end), stamped by the task itself


def chain_edges(stamps: Stamps, n: int) -> list[float]:
    """Upstream end → downstream start of each edge of the chain c0 → c1 → … → c(n-1)."""
    return [stamps[f"c{i}"][0] - stamps[f"c{i - 1}"][1] for i in range(1, n)]


def fanout(stamps: Stamps, n: int) -> dict[str, Any]:
    """root → l0..l(n-1) → join: root end → each leaf's start, last leaf end → join start."""
    root_end = stamps["root"][1]
    starts = [stamps[f"l{i}"][0] - root_end for i in range(n)]
    last_end = max(stamps[f"l{i}"][1] for i in range(n))
    return {
        "tasks": n,
        "root_end_to_leaf_start": summary_ms(starts),
        "root_end_to_last_leaf_start": summary_ms([max(starts)]),
        "last_leaf_end_to_join_start": summary_ms([stamps["join"][0] - last_end]),
    }


def dag_metrics(chain: Mapping[str, Any] | None, fan: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "dag_edge_p50_ms": _get(chain, "edge_latency", "p50_ms"),
        "dag_edge_p99_ms": _get(chain, "edge_latency", "p99_ms"),
        "fanout_last_leaf_ms": _get(fan, "root_end_to_last_leaf_start", "max_ms"),
    }


# -- comparison ----------------------------------------------------------------------------------

# (key, label, True when a higher value is better)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("lag_p50_ms", "lag p50 at 100 runs/s (ms)", False),
    ("lag_p99_ms", "lag p99 at 100 runs/s (ms)", False),
    ("missed_100", "missed ticks at 100 runs/s", False),
    ("duplicates_100", "duplicate ticks at 100 runs/s", False),
    ("cpu_ms_per_run", "CPU per run, scheduler processes (ms)", False),
    ("sustained_per_s", "sustained trivial runs/s", True),
    ("burst_1000_all_started_s", "burst of 1,000: all started after (s)", False),
    ("burst_1000_missed", "burst of 1,000: never started", False),
    ("dag_edge_p50_ms", "DAG chain: upstream end → downstream start p50 (ms)", False),
    ("dag_edge_p99_ms", "DAG chain: upstream end → downstream start p99 (ms)", False),
    ("fanout_last_leaf_ms", "DAG fan-out: root end → last leaf start (ms)", False),
)


def _get(doc: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


def cronmesh_metrics(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The comparable numbers out of ``bench.run``'s result documents (by scenario name)."""
    lag = results.get("lag_100")
    burst_doc = results.get("burst_1000")
    return {
        "lag_p50_ms": _get(lag, "start_lag", "p50_ms"),
        "lag_p99_ms": _get(lag, "start_lag", "p99_ms"),
        "missed_100": _get(lag, "missed_ticks"),
        "duplicates_100": _get(lag, "duplicate_ticks"),
        "cpu_ms_per_run": _get(results.get("cpu_per_run"), "node_plus_etcd_ms_per_run"),
        "sustained_per_s": _get(results.get("e2e_throughput"), "max_sustained_per_s"),
        "burst_1000_all_started_s": _get(burst_doc, "all_started_s"),
        "burst_1000_missed": _get(burst_doc, "missed"),
    }


def peer_metrics(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The same numbers out of one peer's result document (see ``bench.peers.runner``)."""
    lag = doc.get("lag_100")
    b = doc.get("burst_1000")
    return {
        "lag_p50_ms": _get(lag, "start_lag", "p50_ms"),
        "lag_p99_ms": _get(lag, "start_lag", "p99_ms"),
        "missed_100": _get(lag, "missed_ticks"),
        "duplicates_100": _get(lag, "duplicate_ticks"),
        "cpu_ms_per_run": _get(lag, "cpu", "ms_per_run"),
        "sustained_per_s": _get(doc.get("throughput"), "max_sustained_per_s"),
        "burst_1000_all_started_s": _get(b, "all_started_s"),
        "burst_1000_missed": _get(b, "missed"),
        **dag_metrics(doc.get("chain"), doc.get("fanout")),
    }


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """cronmesh / peer; None when either is unknown or the quotient means nothing (x / 0)."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


Row = tuple[str, str, str, str, str, str]
HEAD: Row = ("metric", "peer", "peer value", "cronmesh", "cronmesh/peer", "better")


def comparison_rows(
    cronmesh: Mapping[str, Any], peers: Mapping[str, Mapping[str, Any]]
) -> list[Row]:
    """One row per metric and peer: both values, the ratio cronmesh/peer, and who is ahead."""
    rows: list[Row] = []
    for key, label, higher_better in METRICS:
        for peer, values in peers.items():
            ours, theirs = cronmesh.get(key), values.get(key)
            r = ratio(ours, theirs)
            if ours is None or theirs is None:
                better = ""
            elif ours == theirs:
                better = "same"
            else:
                better = "cronmesh" if (ours > theirs) == higher_better else peer
            rows.append(
                (label, peer, _fmt(theirs), _fmt(ours), "—" if r is None else f"{r:.2f}", better)
            )
    return rows


def format_table(rows: Sequence[Sequence[str]], head: Sequence[str] = HEAD) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    rule = "  ".join("-" * w for w in widths)
    lines = [rule, "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(rule)
    return "\n".join(lines)
