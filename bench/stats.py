"""Distributions: exact percentiles of samples, estimated quantiles of a Prometheus histogram."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.harness import Samples


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); ``q`` in [0, 100]."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summary_ms(values_s: Sequence[float]) -> dict[str, Any]:
    """count, p50/p90/p99/max and mean of durations given in seconds, reported in milliseconds."""
    xs = sorted(values_s)
    if not xs:
        return {"count": 0}
    return {
        "count": len(xs),
        "p50_ms": round(percentile(xs, 50) * 1000, 2),
        "p90_ms": round(percentile(xs, 90) * 1000, 2),
        "p99_ms": round(percentile(xs, 99) * 1000, 2),
        "max_ms": round(xs[-1] * 1000, 2),
        "mean_ms": round(sum(xs) / len(xs) * 1000, 2),
    }


def histogram_buckets(samples: Samples, name: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of histogram ``name``, ascending."""
    out = []
    for (n, labels), v in samples.items():
        if n == f"{name}_bucket":
            le = dict(labels)["le"]
            out.append((math.inf if le in ("+Inf", "inf") else float(le), v))
    return sorted(out)


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Prometheus' estimate: linear interpolation inside the bucket that holds the quantile."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            if math.isinf(le):
                return prev_le
            if cum == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (cum - prev_count)
        prev_le, prev_count = le, cum
    return buckets[-1][0]


def histogram_summary_ms(samples: Samples, name: str) -> dict[str, Any]:
    buckets = histogram_buckets(samples, name)
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, Any] = {"count": int(total)}
    if total:
        for q in (0.5, 0.9, 0.99):
            out[f"p{round(q * 100)}_ms"] = round(histogram_quantile(buckets, q) * 1000, 2)
        out["buckets_ms"] = {
            ("+Inf" if math.isinf(le) else f"{le * 1000:g}"): int(c) for le, c in buckets
        }
    return out
