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


def apply_documents(args: argparse.Namespace, kind: str) -> Iterator[dict[str, Any]]:
    """PUT each document of ``args.file`` as a ``kind`` of the project; yields what was stored."""
    for doc in load_documents(args.file):
        name = doc.get("name") if isinstance(doc, dict) else None
        if not name:
            raise ApiError(
                400, {"error": {"message": f"{args.file}: each {kind} document needs a name"}}
            )
        path = f"{proj(args)}/{kind}s/{urllib.parse.quote(str(name), safe='')}"
        yield call(args, "PUT", path, doc)
