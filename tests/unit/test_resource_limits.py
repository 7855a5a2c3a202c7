"""``resources: {memory, cpu, pids}``: units, ranges, errors naming the field (pure)."""

from __future__ import annotations

import pytest

from cluster.errors import InvalidInput
from cluster.models import JobSpec, parse_model
from cluster.resources import format_bytes, parse_cpu, parse_memory
from cluster.workflows import parse_workflow


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256Mi", 256 * 1024**2),
        ("1G", 10**9),
        ("1.5Gi", int(1.5 * 1024**3)),
        ("4Mi", 4 * 1024**2),
        ("5000000", 5_000_000),
        (5_000_000, 5_000_000),
        ("16Ti", 16 * 1024**4),
        (" 64 Mi ", 64 * 1024**2),
        ("8000k", 8_000_000),
    ],
)
def test_memory_units(text: object, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize(
    "text", ["1Ki", "3Mi", "17Ti", "-1Mi", "12 apples", "", "Mi", "1e9", True, None, [1]]
)
def test_memory_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_memory(text)


@pytest.mark.parametrize(
    ("text", "cores"), [(0.5, 0.5), ("500m", 0.5), ("2", 2.0), (1, 1.0), ("10m", 0.01)]
)
def test_cpu_units(text: object, cores: float) -> None:
    assert parse_cpu(text) == cores


@pytest.mark.parametrize("text", [0, "0", "5m", 1025, "nan", "inf", float("nan"), "one", True])
def test_cpu_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_cpu(text)


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"memory": "lots"}, "resources.memory"),
        ({"memory": "1Ki"}, "resources.memory"),
        ({"cpu": 0}, "resources.cpu"),
        ({"cpu": "2 cores"}, "resources.cpu"),
        ({"pids": 0}, "resources.pids"),
        ({"pids": 5_000_000}, "resources.pids"),
        ({"pids": "5"}, "resources.pids"),
        ({"disk": "1G"}, "resources.disk"),
        ("256Mi", "resources"),
    ],
)
def test_job_errors_name_the_field(resources: object, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_model(JobSpec, {"name": "j", "command": "true", "resources": resources})
    assert info.value.field == field


def test_job_and_task_carry_normalised_limits() -> None:
    job = parse_model(
        JobSpec,
        {"name": "j", "command": "true", "resources": {"memory": "64Mi", "cpu": "250m"}},
    )
    assert job.resources is not None
    assert (job.resources.memory, job.resources.cpu, job.resources.pids) == (64 << 20, 0.25, None)
    assert job.resources.asked() == {"memory": 64 << 20, "cpu": 0.25}
    wf = parse_workflow(
        {"name": "w", "tasks": [{"name": "t", "command": "true", "resources": {"pids": 20}}]}
    )
    snapshot = wf.job_spec(wf.tasks[0])
    assert snapshot.resources is not None and snapshot.resources.pids == 20


def test_format_bytes() -> None:
    assert format_bytes(None) == "-"
    assert format_bytes(512) == "512"
    assert format_bytes(64 << 20) == "64.0Mi"
