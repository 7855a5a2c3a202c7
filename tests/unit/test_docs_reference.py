"""The job reference documents every field of the models (so it cannot silently fall behind)."""

from __future__ import annotations

import re

import pytest

from cluster.models import JobSpec, PythonTarget, ScheduleSpec, Target
from cluster.notify import Email, NotificationRule, Webhook
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "reference" / "jobs.md").read_text()


def documented(section: str) -> set[str]:
    start = DOC.index(section)
    nxt = DOC.find("\n## ", start + 1)
    body = DOC[start : nxt if nxt != -1 else len(DOC)]
    return set(re.findall(r"^\| `([a-z_]+)` \|", body, re.M))


@pytest.mark.parametrize(
    ("model", "section"),
    [
        (JobSpec, "## Job fields"),
        (ScheduleSpec, "## `schedules[]`"),
        (PythonTarget, "## `python`"),
        (Target, "## `target`"),
        (NotificationRule, "## `notifications[]`"),
        (Webhook, "`webhook`:"),
        (Email, "`email`:"),
    ],
)
def test_every_field_is_documented(model, section):
    fields = {f.alias or name for name, f in model.model_fields.items()}
    assert fields <= documented(section), fields - documented(section)
