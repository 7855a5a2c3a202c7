"""GitOps: a folder of YAML documents is the desired state; compare it with the cluster's,
plan the changes, and write the cluster's state back out as such a folder.

Each document has a ``kind`` (default ``Job``) and an optional ``project`` (default: the CLI's
``--project``); the rest is the object as the API takes it. Kinds are registered in ``KINDS``:
a new kind (workflows come with their branch) adds one entry, naming its API collection and the
pydantic model that fills in defaults, so a comparison does not report a default as a change.
This module is pure (plans from plain values); ``nodes/cli/gitops.py`` does the HTTP calls.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cluster.blackouts import WindowSpec
from cluster.calendars import CalendarSpec
from cluster.errors import InvalidInput
from cluster.models import READ_ONLY_JOB_FIELDS, JobSpec, parse_model
from nodes.cli import yamlio


@dataclass(frozen=True)
class Kind:
    name: str  # as written in documents: Job, Workflow
    collection: str  # API collection under /api/v1/projects/{project}/
    read_only: tuple[str, ...] = ()
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    compact: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def spec(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The comparable form of a document: read-only fields dropped, defaults filled in."""
        body = {k: v for k, v in doc.items() if k not in self.read_only}
        return self.normalize(body) if self.normalize else body

    def minimal(self, doc: dict[str, Any]) -> dict[str, Any]:
        """What ``export`` writes: the spec without the fields left at their default."""
        body = {k: v for k, v in doc.items() if k not in self.read_only}
        return self.compact(body) if self.compact else body


def _job_spec(body: dict[str, Any]) -> dict[str, Any]:
    return parse_model(JobSpec, body).model_dump(mode="json")


def _job_compact(body: dict[str, Any]) -> dict[str, Any]:
    return parse_model(JobSpec, body).model_dump(mode="json", exclude_defaults=True)


def _model_spec(model: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda body: parse_model(model, body).model_dump(mode="json")


def _model_compact(model: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda body: parse_model(model, body).model_dump(mode="json", exclude_defaults=True)


_STORED = ("scope", "created_at", "updated_at", "updated_by")  # of calendars and windows

KINDS: dict[str, Kind] = {
    # a project's calendars and blackout windows (D236, D237); the cluster's are not in folders
    "Calendar": Kind(
        "Calendar", "calendars", _STORED, _model_spec(CalendarSpec), _model_compact(CalendarSpec)
    ),
    "Blackout": Kind(
        "Blackout", "blackouts", _STORED, _model_spec(WindowSpec), _model_compact(WindowSpec)
    ),
    "Job": Kind("Job", "jobs", READ_ONLY_JOB_FIELDS, _job_spec, _job_compact),
    # Workflows: the API of the workflows branch (issue 4); documents pass through unchanged.
    "Workflow": Kind("Workflow", "workflows", READ_ONLY_JOB_FIELDS),
}


@dataclass(frozen=True)
class Doc:
    kind: Kind
    project: str
    name: str
    body: dict[str, Any]
    source: str

    @property
    def ident(self) -> tuple[str, str, str]:
        return (self.kind.name, self.project, self.name)


def _kind_of(raw: Any) -> Kind:
    name = str(raw or "Job")
    for kind in KINDS.values():
        if kind.name.lower() == name.lower():
            return kind
    raise InvalidInput(f"unknown kind {name!r}; known: {', '.join(KINDS)}", field="kind")


def parse_documents(texts: Iterable[tuple[str, str]], default_project: str) -> list[Doc]:
    """Documents from (source name, YAML text) pairs; duplicates are an error."""
    docs: list[Doc] = []
    seen: dict[tuple[str, str, str], str] = {}
    for source, text in texts:
        try:
            loaded = list(yamlio.load_all(text, name=source))
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{source}: not valid YAML: {exc}") from None
        for item in loaded:
            for raw in item if isinstance(item, list) else [item]:
                if raw is None:
                    continue
                if not isinstance(raw, dict):
                    raise InvalidInput(f"{source}: each document must be a mapping")
                body = dict(raw)
                kind = _kind_of(body.pop("kind", None))
                project = str(body.pop("project", None) or default_project)
                name = body.get("name")
                if not isinstance(name, str) or not name:
                    raise InvalidInput(
                        f"{source}: a {kind.name} document needs a name", field="name"
                    )
                if kind.normalize is not None:
                    try:
                        kind.normalize(body)
                    except InvalidInput as exc:
                        raise InvalidInput(
                            f"{source}: {kind.name} {name}: {exc.message}", field=exc.field
                        ) from None
                doc = Doc(kind, project, name, body, source)
                if doc.ident in seen:
                    raise InvalidInput(
                        f"{kind.name} {project}/{name} is defined twice: {seen[doc.ident]} and "
                        f"{source}"
                    )
                seen[doc.ident] = source
                docs.append(doc)
    return docs


def read_folder(path: Path, default_project: str) -> list[Doc]:
    """Every *.yaml, *.yml and *.json file under ``path`` (or the one file ``path``)."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
        )
    else:
        raise InvalidInput(f"{path} does not exist", field="file")
    return parse_documents(((str(p), p.read_text()) for p in files), default_project)


@dataclass
class Change:
    action: str  # create | update | delete
    kind: Kind
    project: str
    name: str
    body: dict[str, Any] | None = None
    diff: list[str] = field(default_factory=list)

    def title(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-"}[self.action]
        return f"{sign} {self.kind.name.lower()} {self.project}/{self.name} ({self.action})"


def _dump(doc: dict[str, Any]) -> list[str]:
    text: str = yaml.safe_dump(doc, sort_keys=True)
    return text.splitlines(keepends=True)


def plan(
    desired: list[Doc],
    current: dict[tuple[str, str, str], dict[str, Any]],
    *,
    prune: bool,
    pruned_scope: set[tuple[str, str]] | None = None,
) -> list[Change]:
    """Changes that make ``current`` (ident -> stored document) match ``desired``.

    With ``prune``, objects of a (kind, project) that the folder covers (``pruned_scope``; by
    default those present in ``desired``) and that the folder does not have are deleted.
    """
    changes: list[Change] = []
    wanted = {d.ident for d in desired}
    for doc in desired:
        have = current.get(doc.ident)
        if have is None:
            changes.append(Change("create", doc.kind, doc.project, doc.name, doc.body))
            continue
        a, b = doc.kind.spec(have), doc.kind.spec(doc.body)
        if a != b:
            diff = list(
                difflib.unified_diff(
                    _dump(a), _dump(b), f"cluster: {doc.project}/{doc.name}", doc.source
                )
            )
            changes.append(Change("update", doc.kind, doc.project, doc.name, doc.body, diff))
    if prune:
        scope = pruned_scope or {(d.kind.name, d.project) for d in desired}
        for ident in sorted(current):
            kind_name, project, name = ident
            if ident not in wanted and (kind_name, project) in scope:
                changes.append(Change("delete", KINDS[kind_name], project, name))
    return changes


def export_files(objects: list[tuple[Kind, str, dict[str, Any]]]) -> dict[str, str]:
    """Relative path -> YAML text: one file per object, ``<project>/<kind>s/<name>.yaml``."""
    out: dict[str, str] = {}
    for kind, project, doc in objects:
        body = {"kind": kind.name, "project": project, **kind.minimal(doc)}
        path = f"{project}/{kind.collection}/{doc['name']}.yaml"
        out[path] = yaml.safe_dump(body, sort_keys=False)
    return out
