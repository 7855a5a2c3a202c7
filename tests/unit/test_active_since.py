"""When a job or a workflow is active from (D6), one rule for both (``cluster.models.active_since``):
kept while its enabled schedules stay the same and it stays enabled (or is disabled); the
write's instant at creation, when it is enabled again and when its enabled schedules change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cluster.models import Job, JobSpec, active_since
from cluster.workflows import Workflow, WorkflowSpec

BEFORE = datetime(2026, 12, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 7, 15, tzinfo=UTC)
EVERY_MINUTE = {"cron": "* * * * *"}
HOURLY = {"cron": "0 * * * *"}


def job(schedules: list[dict[str, Any]], enabled: bool = True) -> JobSpec:
    return JobSpec(name="j", command="true", schedules=schedules, enabled=enabled)


def workflow(schedules: list[dict[str, Any]], enabled: bool = True) -> WorkflowSpec:
    tasks = [{"name": "t", "command": "true"}]
    return WorkflowSpec(name="w", tasks=tasks, schedules=schedules, enabled=enabled)


def stored(spec: JobSpec | WorkflowSpec) -> Job | Workflow:
    kind = Job if isinstance(spec, JobSpec) else Workflow
    kept = {"project": "p", "created_at": BEFORE, "updated_at": BEFORE, "active_since": BEFORE}
    return kind(**spec.model_dump(), **kept)


@pytest.mark.parametrize("make", [job, workflow])
@pytest.mark.parametrize(
    ("old", "new", "since"),
    [
        (None, ([EVERY_MINUTE], True), NOW),  # created
        (([EVERY_MINUTE], True), ([EVERY_MINUTE], True), BEFORE),  # rewritten as it was
        (([EVERY_MINUTE], True), ([EVERY_MINUTE], False), BEFORE),  # disabled
        (([EVERY_MINUTE], False), ([EVERY_MINUTE], True), NOW),  # enabled again
        (([EVERY_MINUTE], True), ([HOURLY], True), NOW),  # its schedule changed
        (([EVERY_MINUTE], True), ([EVERY_MINUTE, HOURLY], True), NOW),  # one added
        (([EVERY_MINUTE, {**HOURLY, "enabled": False}], True), ([EVERY_MINUTE], True), BEFORE),
        (([EVERY_MINUTE], True), ([{**EVERY_MINUTE, "enabled": False}], True), NOW),
    ],
)
def test_active_since(make, old, new, since):
    before = stored(make(*old)) if old is not None else None
    assert active_since(before, make(*new), NOW) == since
