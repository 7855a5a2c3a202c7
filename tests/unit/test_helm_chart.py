"""The Helm chart is linted by Helm's own library (helm-sdkpy), whose lint renders every template
and validates the values against values.schema.json; the Dockerfile gets the static checks we can
make without a Docker engine (see docs/operations.md)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import helm_sdkpy as helm  # installed by .ci/bootstrap (see there why not by pip -e)
import jsonschema
import pytest
import yaml

from tests.conftest import ROOT

CHART = ROOT / "helm" / "cronmesh"
ERROR, WARNING = 3, 2


def lint(chart: Path) -> dict[str, Any]:
    return asyncio.run(helm.Lint(helm.Configuration()).run(str(chart)))


def problems(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in result["Messages"] if m["Severity"] >= WARNING]


def chart_with(tmp_path: Path, change: dict[str, Any]) -> Path:
    """A copy of the chart whose values.yaml has ``change`` merged in (Lint reads values.yaml)."""
    copy = tmp_path / "cronmesh"
    shutil.copytree(CHART, copy)
    values = yaml.safe_load((copy / "values.yaml").read_text())

    def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    merge(values, change)
    (copy / "values.yaml").write_text(yaml.safe_dump(values))
    return copy


ETCD_ENABLED = {
    "etcd": {"enabled": True},
    "persistence": {"enabled": True},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
    "logStore": {
        "url": "s3://logs/cronmesh",
        "endpoint": "http://minio:9000",
        "accessKeyId": "AKIA",
        "secretAccessKey": "secret",
    },
    "security": {
        "level": 1,
        "nodeSecret": "s3cret",
        "adminUser": "admin",
        "adminPassword": "pw",
    },
    "node": {
        "properties": {"zone": "a", "gpu": "true"},
        "jobEnv": {"STAGE": "prod"},
        "jobEnvPassthrough": ["HTTP_PROXY"],
        "runAs": {
            "users": ["etl"],
            "default": "jobs",
            "uidRange": "70000-70999",
            "allowRootJobs": True,
        },
    },
    "notifications": {
        "smtpUrl": "smtp://mail:25?from=cronmesh@example.com",
        "publicUrl": "https://cron.example.com",
    },
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
}


def test_chart_lints_clean_with_default_values() -> None:
    result = lint(CHART)
    assert result["TotalChartsLinted"] == 1
    assert result["Errors"] is None, result
    assert problems(result) == []


def test_chart_lints_clean_with_bundled_etcd_and_every_option(tmp_path: Path) -> None:
    result = lint(chart_with(tmp_path, ETCD_ENABLED))
    assert result["Errors"] is None, result
    assert problems(result) == []


@pytest.mark.parametrize(
    "change",
    [
        {"replicaCount": "three"},
        {"etcd": {"replicas": 2}},
        {"node": {"logFormat": "xml"}},
        {"node": {"runAs": {"users": ["Not A User"]}}},
        {"node": {"runAs": {"uidRange": "lots"}}},
        {"notifications": {"publicUrl": "https://admin:pw@cron.example.com"}},
        {"notifications": {"publicUrl": "javascript:alert(1)"}},
        {"unknownKey": 1},
    ],
)
def test_lint_rejects_values_the_schema_forbids(tmp_path: Path, change: dict[str, Any]) -> None:
    result = lint(chart_with(tmp_path, change))
    assert result["Errors"], result
    assert any(m["Severity"] == ERROR and m["Path"] == "values.yaml" for m in result["Messages"])


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    copy = chart_with(tmp_path, {})
    path = copy / "templates" / "pdb.yaml"
    path.write_text(path.read_text().replace("{{- end }}", ""))
    result = lint(copy)
    assert result["Errors"], result


def test_default_values_validate_against_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**values, "replicaCount": 0}, schema)


def test_every_value_is_documented() -> None:
    """Each key of values.yaml has a comment right above it, or is an undocumented section whose
    keys are documented, or sits inside a documented key's default (e.g. resources)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    documented_at: list[int] = []  # indents of documented ancestors
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w]*):(.*)$", line)
        if not m:
            continue
        indent = len(m.group(1))
        documented_at = [d for d in documented_at if d < indent]
        j = i - 1
        while (
            j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --")
        ):
            j -= 1  # continuation lines of a comment block
        has_comment = j >= 0 and lines[j].strip().startswith("# --")
        is_section = m.group(3).strip() == ""
        if has_comment:
            documented_at.append(indent)
        elif not documented_at and not is_section:
            undocumented.append(m.group(2))
    assert undocumented == []


def test_drain_fits_in_the_termination_grace_period() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    template = (CHART / "templates" / "statefulset.yaml").read_text()
    assert "terminationGracePeriodSeconds: {{ add (int .Values.node.drainTimeout)" in template
    assert values["node"]["terminationGraceExtraSeconds"] > 0
    assert "path: /readyz" in template and "path: /healthz" in template


def test_dockerfile_is_multi_stage_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2
    assert "COPY --from=build" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0"))
    entry = re.search(r"^ENTRYPOINT\s+(\[.*\])", text, re.M)
    assert entry is not None and "cronmesh" in json.loads(entry.group(1))
    cmd = re.search(r"^CMD\s+(\[.*\])", text, re.M)
    assert cmd is not None and json.loads(cmd.group(1)) == ["node"]
