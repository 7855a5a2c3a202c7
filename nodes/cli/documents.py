"""Documents the CLI sends: YAML/JSON files (``-`` for stdin), applied one by one, and
``NAME=VALUE`` parameters."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from nodes.cli import yamlio
from nodes.cli.client import ApiError, call, proj


def load_documents(path: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    source = "<stdin>" if path == "-" else path
    docs: list[dict[str, Any]] = []
    try:  # only true/false are booleans (`on:` stays a key)
        loaded = list(yamlio.load_all(text, name=source))
    except yaml.YAMLError as exc:  # name the file: `job apply -f` may be one of many (D509)
        raise ApiError(0, {"error": {"message": f"{source}: not valid YAML: {exc}"}}) from None
    for doc in loaded:
        if doc is None:
            continue
        if isinstance(doc, list):
            docs.extend(doc)
        else:
            docs.append(doc)
    return docs


def params(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"cronmesh: --param {item!r} must look like NAME=VALUE")
        out[key] = value
    return out


# The kinds a `cronmesh KIND apply -f` takes.
APPLY_COMMANDS = ("job", "workflow", "calendar", "blackout", "group", "budget")


def _as_kind(doc: dict[str, Any], kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """``doc`` as the API takes a ``kind``: an exported file's ``kind``/``project`` (`cronmesh
    export` writes them) dropped when they agree with the command, or the right command named
    when they do not — or when the document is plainly the other kind (D509)."""
    name = doc["name"]
    other = "workflow" if kind == "job" else "job"
    written = str(doc.get("kind", "")).lower()
    looks_other = (
        "tasks" in doc and not {"command", "python"} & set(doc)
        if kind == "job"
        else "tasks" not in doc and bool({"command", "python"} & set(doc))
    )
    if (written and written != kind) or (not written and looks_other):
        what = (
            f"kind: {doc['kind']}"
            if written
            else ("it has tasks" if kind == "job" else "it has a command")
        )
        right = written if written else other
        fix = f"`cronmesh {right} apply -f`, or " if right in APPLY_COMMANDS else ""
        source = "<stdin>" if args.file == "-" else args.file
        raise ApiError(
            400,
            {
                "error": {
                    "message": f"{source}: {name} is not a {kind} ({what}): apply it with"
                    f" {fix}a folder of any kinds with `cronmesh apply -f`"
                }
            },
        )
    project = doc.get("project")
    if project is not None and project != args.project:
        raise ApiError(
            400,
            {
                "error": {
                    "message": f"{args.file}: {name} is of project {project!r}, not"
                    f" {args.project!r}: add `-p {project}`, or apply it with `cronmesh apply -f`"
                }
            },
        )
    return {k: v for k, v in doc.items() if k not in ("kind", "project")}


def apply_documents(args: argparse.Namespace, kind: str) -> Iterator[dict[str, Any]]:
    """PUT each document of ``args.file`` as a ``kind`` of the project; yields what was stored."""
    for doc in load_documents(args.file):
        name = doc.get("name") if isinstance(doc, dict) else None
        if not name:
            raise ApiError(
                400, {"error": {"message": f"{args.file}: each {kind} document needs a name"}}
            )
        path = f"{proj(args)}/{kind}s/{urllib.parse.quote(str(name), safe='')}"
        yield call(args, "PUT", path, _as_kind(doc, kind, args))
