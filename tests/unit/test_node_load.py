"""The node's published load (D257): rates from two samples, when a sample is worth a write, and
the runs' usage read from a cgroup subtree's files (v2, v1, none)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from nodes.daemon.load import (
    MAX_DOC_BYTES,
    REFRESH_EVERY,
    Sample,
    load_doc,
    runs_usage,
    sample,
    worth_writing,
)
from nodes.executor.cgroups import NONE, Layout

AT = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _sample(mono: float, **kw) -> Sample:
    values = dict(
        node_cpu_seconds=1.0,
        node_rss=80 * 2**20,
        runs_cpu_seconds=10.0,
        runs_memory=100 * 2**20,
        load1=0.5,
        cpus=2,
        mem_total=8 * 2**30,
        mem_available=4 * 2**30,
    )
    values.update(kw)
    return Sample(mono=mono, **values)


def test_rates_need_two_samples_and_a_counter_that_went_forward():
    first = load_doc(None, _sample(100.0), AT)
    assert first["runs_cpu"] is None and first["node_cpu"] is None
    assert first["runs_memory"] == 100 * 2**20 and first["at"] == AT.isoformat()
    later = _sample(110.0, runs_cpu_seconds=25.0, node_cpu_seconds=1.5)
    doc = load_doc(_sample(100.0), later, AT)
    assert doc["runs_cpu"] == 1.5  # 15 CPU seconds in 10 s: one and a half cores
    assert doc["node_cpu"] == 0.05
    # a counter that went back (the subtree was made anew) gives no rate, not a negative one
    assert load_doc(_sample(100.0), _sample(110.0, runs_cpu_seconds=1.0), AT)["runs_cpu"] is None
    # the record stays small whatever the numbers
    huge = _sample(110.0, runs_memory=2**62, node_rss=2**62, mem_total=2**62, runs_cpu_seconds=1e15)
    assert len(json.dumps(load_doc(_sample(100.0), huge, AT))) <= MAX_DOC_BYTES


@pytest.mark.parametrize(
    ("change", "age", "write"),
    [
        ({}, 1.0, False),  # nothing moved
        ({}, REFRESH_EVERY, True),  # but now and then anyway
        ({"runs_memory": 100 * 2**20 + 2**20}, 1.0, False),  # 1 MiB: below its step
        ({"runs_memory": 200 * 2**20}, 1.0, True),
        ({"runs_cpu": 0.52}, 1.0, False),
        ({"runs_cpu": 0.9}, 1.0, True),
        ({"runs_cpu": None}, 1.0, True),  # a value went
        ({"load1": 3.0, "node_rss": 2**30, "mem_available": 2**30}, 1.0, False),  # the machine
        ({"load1": 3.0}, REFRESH_EVERY, True),
        ({"cpus": 4}, 1.0, True),
    ],
)
def test_worth_writing(change, age, write):
    last = {
        "runs_cpu": 0.5,
        "runs_memory": 100 * 2**20,
        "node_cpu": 0.01,
        "node_rss": 80 * 2**20,
        "load1": 0.5,
        "cpus": 2,
        "mem_total": 8 * 2**30,
        "mem_available": 4 * 2**30,
    }
    assert worth_writing(last, {**last, **change}, age) is write
    assert worth_writing(None, last, 0.0) is True


def test_runs_usage_from_the_subtree_files(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (v2 / "memory.current").write_text("73400320\n")
    full = Layout(mode="v2", kill="cgroup.kill", v2=str(v2), limits={"memory": "v2"})
    assert runs_usage(full) == (2.5, 73400320)
    # v2 for CPU, v1 for memory (this machine class)
    mem = tmp_path / "memory"
    mem.mkdir()
    (mem / "memory.usage_in_bytes").write_text("1048576\n")
    mixed = Layout(
        mode="v2+v1", kill="cgroup.kill", v2=str(v2), v1={"memory": str(mem)},
        limits={"memory": "v1"},
    )  # fmt: skip
    assert runs_usage(mixed) == (2.5, 1048576)
    # v1 only
    acct = tmp_path / "cpuacct"
    acct.mkdir()
    (acct / "cpuacct.usage").write_text("3000000000\n")
    v1 = Layout(mode="v1", kill="freezer", v1={"cpuacct": str(acct), "memory": str(mem)})
    assert runs_usage(v1) == (3.0, 1048576)
    # files missing (a subtree gone): unknown, not an error
    gone = Layout(mode="v2", kill="cgroup.kill", v2=str(tmp_path / "nope"))
    assert runs_usage(gone) == (None, None)


def test_a_sample_of_this_process_and_machine():
    s = sample(NONE)  # no cgroups: the runs' usage is unknown
    assert s.runs_cpu_seconds is None and s.runs_memory is None
    assert s.node_rss is not None and s.node_rss > 10 * 2**20
    assert s.mem_total is not None and s.mem_available is not None
    assert 0 < s.mem_available <= s.mem_total
    assert s.cpus and s.cpus >= 1 and s.load1 is not None
