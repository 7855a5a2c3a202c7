"""Garbage collection of a node process (D138).

A busy node allocates a few hundred thousand objects per second (watch events, protobuf
messages, run documents) and keeps tens of thousands alive (queued runs, caches). With
CPython's default thresholds (700, 10, 10) its collector ran about a hundred times per second
and, every few seconds, a full collection over everything alive: at 500 runs/s offered that was
4 s of a 40 s benchmark, in pauses of up to a quarter of a second.

``tune`` moves what start-up built (modules, configuration, the node's wiring) out of the
collector's sight (``gc.freeze``) and raises the thresholds, so young collections are ~70 times
rarer and full ones practically never happen; reference counting still frees everything that
is not in a cycle at once. Measured at 500 runs/s offered: time in the collector 4.1 s → 0.6 s,
the lag p99 643 → 54 ms. ``CRONMESH_GC_THRESHOLDS`` (three integers, as ``gc.set_threshold``
takes them; ``700,10,10`` restores CPython's) overrides the thresholds.

A full collection still runs every 15 minutes (:func:`full_collections`), so cyclic garbage
that reached the oldest generation does not wait for ~10,000 young collections. Every
collection is timed into ``cronmesh_gc_pause_seconds``.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import HistogramMetricFamily

from cluster.errors import InvalidInput
from nodes import metrics

DEFAULT_THRESHOLDS = (50_000, 100, 100)
ENV = "CRONMESH_GC_THRESHOLDS"
FULL_EVERY = 900.0  # s between full collections (the thresholds alone would make them rare)

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# Filled by the collector's callback, which must take no lock: a collection can start inside
# any allocation, also one made while a thread holds a metric's lock (a scrape copying its
# samples), and a callback waiting for that lock would wait for ever. Plain lists of numbers
# (ints and floats are never collected) are read by ``_PauseCollector`` at scrape time.
_counts = [[0] * (len(BUCKETS) + 1) for _ in range(3)]  # per generation, per bucket, +Inf last
_sums = [0.0, 0.0, 0.0]
_started = 0.0


class _PauseCollector:
    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "cronmesh_gc_pause_seconds",
            "Pauses of the node's garbage collector, by generation collected",
            labels=["generation"],
        )
        for gen in range(3):
            running = 0
            buckets = []
            for bound, count in zip((*BUCKETS, math.inf), _counts[gen], strict=True):
                running += count
                buckets.append(("+Inf" if bound == math.inf else str(bound), running))
            family.add_metric([str(gen)], buckets, _sums[gen])
        yield family


metrics.REGISTRY.register(_PauseCollector())


def parse_thresholds(text: str) -> tuple[int, int, int]:
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0:
        raise InvalidInput(
            f"{ENV} must be three non-negative integers like 50000,100,100, not {text!r}",
            field=ENV,
        )
    return values[0], values[1], values[2]


def _observe(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    took = time.perf_counter() - _started
    gen = min(max(int(info.get("generation", 0)), 0), 2)
    _counts[gen][bisect.bisect_left(BUCKETS, took)] += 1
    _sums[gen] += took


def tune(env: Mapping[str, str] = os.environ) -> tuple[int, int, int]:
    """Freeze what exists, set the thresholds, time each collection; for a node process only
    (tests that run nodes inside pytest leave the test process's collector alone)."""
    spec = env.get(ENV)
    thresholds = parse_thresholds(spec) if spec else DEFAULT_THRESHOLDS
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)
    return thresholds


def settle() -> None:
    """What the node just loaded to keep (a new leader's jobs, D262) is moved out of the
    collector's sight like what start-up built: 100,000 jobs are millions of objects, and a
    collection walking them stalls the loop for seconds (the lease lapsed in one). Only in a
    tuned node process (tests running nodes inside pytest leave its collector alone)."""
    if _observe in gc.callbacks:
        gc.freeze()


async def full_collections(every: float = FULL_EVERY) -> None:
    """A full collection every ``every`` seconds: with the raised thresholds one would
    otherwise come only after ~10,000 young ones, and cyclic garbage that lived long enough to
    reach the oldest generation would wait that long (a pause of tens to hundreds of
    milliseconds, every quarter of an hour, instead of one every few seconds under load)."""
    while True:
        await asyncio.sleep(every)
        gc.collect()
