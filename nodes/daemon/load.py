"""What a node publishes about its load for the Machines page (D257): the CPU and memory its runs
use now (read from the node's cgroup subtree, which holds every run's cgroup and nothing else),
the node process's own, and the machine's load average and memory.

One small leased key per node (``node-load/<id>``): it goes with the node's lease, so a dead
node shows no stale load. Sampled every ``SAMPLE_EVERY`` seconds and written only when a value
what its runs use moved by more than a step (or ``REFRESH_EVERY`` passed), so an idle node writes
about once a minute. Nobody watches the key; ``GET /api/v1/nodes`` reads the prefix once per call.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from cluster.etcd import Etcd
    from cluster.keys import Keys
    from cluster.session import Session
    from nodes.executor.cgroups import Layout

log = structlog.get_logger(__name__)

SAMPLE_EVERY = 10.0
REFRESH_EVERY = 60.0
# What the runs use is written when it moves by more than its step (bytes, cores); the rest (the
# node process, the machine: informational, and moved by everything else on the machine) only
# with it or every REFRESH_EVERY.
STEPS = {"runs_memory": 8 * 2**20, "runs_cpu": 0.05}
MAX_DOC_BYTES = 512  # fixed fields: the record stays small whatever the machine says


@dataclass(frozen=True, slots=True)
class Sample:
    """Counters read at one moment (``mono``: a monotonic clock, seconds)."""

    mono: float
    node_cpu_seconds: float
    node_rss: int | None
    runs_cpu_seconds: float | None
    runs_memory: int | None
    load1: float | None
    cpus: int | None
    mem_total: int | None
    mem_available: int | None


def load_doc(prev: Sample | None, cur: Sample, at: datetime) -> dict[str, Any]:
    """The published record: counters turned into rates (cores) over the time since ``prev``.
    Without a previous sample (or a counter that went back, a new cgroup tree) a rate is None."""

    def rate(a: float | None, b: float | None) -> float | None:
        if prev is None or a is None or b is None or cur.mono <= prev.mono or b < a:
            return None
        return round((b - a) / (cur.mono - prev.mono), 3)

    return {
        "at": at.isoformat(),
        "runs_cpu": rate(prev.runs_cpu_seconds if prev else None, cur.runs_cpu_seconds),
        "runs_memory": cur.runs_memory,
        "node_cpu": rate(prev.node_cpu_seconds if prev else None, cur.node_cpu_seconds),
        "node_rss": cur.node_rss,
        "load1": cur.load1,
        "cpus": cur.cpus,
        "mem_total": cur.mem_total,
        "mem_available": cur.mem_available,
    }


def worth_writing(last: dict[str, Any] | None, doc: dict[str, Any], age: float) -> bool:
    """Write when nothing was written, the last write is ``REFRESH_EVERY`` old, a value appeared
    or went, or one moved by more than its step."""
    if last is None or age >= REFRESH_EVERY:
        return True
    for name, step in STEPS.items():
        a, b = last.get(name), doc.get(name)
        if (a is None) != (b is None) or (a is not None and b is not None and abs(b - a) > step):
            return True
    return any(last.get(k) != doc.get(k) for k in ("cpus", "mem_total"))


# -- reading the counters (Linux; anything missing is None) --------------------------------------


def _int_file(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _keyed(path: str, key: str) -> int | None:
    """``key value`` lines (cpu.stat, /proc/meminfo's ``Key: value kB``)."""
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if parts and parts[0].rstrip(":") == key:
                    return int(parts[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def runs_usage(layout: Layout) -> tuple[float | None, int | None]:
    """CPU seconds and memory bytes of every run of this node: the node's subtree in each
    hierarchy holds only run cgroups, and a cgroup counts its children."""
    cpu: float | None = None
    if layout.v2:
        usec = _keyed(os.path.join(layout.v2, "cpu.stat"), "usage_usec")
        cpu = usec / 1e6 if usec is not None else None
    elif "cpuacct" in layout.v1:
        ns = _int_file(os.path.join(layout.v1["cpuacct"], "cpuacct.usage"))
        cpu = ns / 1e9 if ns is not None else None
    memory: int | None = None
    if layout.limits.get("memory") == "v2" and layout.v2:
        memory = _int_file(os.path.join(layout.v2, "memory.current"))
    elif "memory" in layout.v1:
        memory = _int_file(os.path.join(layout.v1["memory"], "memory.usage_in_bytes"))
    return cpu, memory


def sample(layout: Layout) -> Sample:
    """Blocking but short (a handful of small files): call in a thread."""
    runs_cpu, runs_memory = runs_usage(layout) if layout.enabled else (None, None)
    rss_kib = _keyed("/proc/self/status", "VmRSS")
    try:
        load1: float | None = round(os.getloadavg()[0], 2)
    except OSError:
        load1 = None
    total = _keyed("/proc/meminfo", "MemTotal")
    available = _keyed("/proc/meminfo", "MemAvailable")
    return Sample(
        mono=time.monotonic(),
        node_cpu_seconds=time.process_time(),
        node_rss=rss_kib * 1024 if rss_kib is not None else None,
        runs_cpu_seconds=runs_cpu,
        runs_memory=runs_memory,
        load1=load1,
        cpus=os.cpu_count(),
        mem_total=total * 1024 if total is not None else None,
        mem_available=available * 1024 if available is not None else None,
    )


async def publish(
    etcd: Etcd,
    keys: Keys,
    node_id: str,
    session: Session,
    layout: Layout,
    clock: Callable[[], datetime],
    every: float = SAMPLE_EVERY,
) -> None:
    """Sample and publish until cancelled (the node's serving ends); a failed write is retried
    at the next sample, never ends the node."""
    key = keys.node_load(node_id)
    prev: Sample | None = None
    last: dict[str, Any] | None = None
    written = 0.0
    first = True
    while True:
        try:
            cur = await asyncio.to_thread(sample, layout)
            doc = load_doc(prev, cur, clock())
            prev = cur
            if worth_writing(last, doc, cur.mono - written):
                body = json.dumps(doc, separators=(",", ":"))
                if len(body) > MAX_DOC_BYTES:  # cannot happen with numbers; never write more
                    raise ValueError(f"load record of {len(body)} bytes")
                await etcd.put(key, body, lease=session.lease_id)
                last, written = doc, cur.mono
        except Exception as exc:  # etcd unreachable mostly: the next sample tries again
            log.info("node load not published; retrying", error=str(exc) or repr(exc))
        # the second sample soon: rates need two, and a new node should not show "—" for long
        await asyncio.sleep(min(1.0, every) if first else every)
        first = False
