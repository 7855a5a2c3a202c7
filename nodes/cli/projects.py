"""CLI of projects: ``cronmesh project list|get`` (a project's quotas beside its usage)."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from nodes.cli.client import call, call_all
from nodes.cli.output import show, table

BASE = "/api/v1/projects"
BYTE_QUOTAS = ("bytes", "run_history_bytes")
LABELS = {
    "jobs": "jobs",
    "workflows": "workflows",
    "bytes": "job and workflow documents",
    "run_history_bytes": "run history",
}


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("project", help="projects, their quotas and what they use")
    pa = p.add_subparsers(dest="action", required=True)
    pa.add_parser("list", help="the projects you can see")
    pa.add_parser("get", help="a project's quotas beside its usage (a table)").add_argument(
        "name", nargs="?", help="project name (default: --project)"
    )
    for parser in pa.choices.values():
        parser.set_defaults(func=cmd_project)


def size(n: int) -> str:
    """Bytes for people: 1536 → '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)  # not reached


def usage_rows(view: dict[str, Any]) -> list[list[str]]:
    """One row per quota: what the project uses, its limit and the share used."""
    quotas, usage = view.get("quotas") or {}, view.get("usage") or {}
    overridden = view.get("quota_overrides") or {}
    rows = []
    for name, label in LABELS.items():
        if name not in quotas:
            continue
        used, limit = int(usage.get(name, 0)), int(quotas[name])
        text = size if name in BYTE_QUOTAS else str
        share = f"{100 * used / limit:.0f}%" if limit else "-"
        note = "set for this project" if name in overridden else "cluster default"
        rows.append([label, text(used), text(limit), share, note])
    return rows


def cmd_project(args: argparse.Namespace) -> int:
    if args.action == "list":
        names = call_all(args, BASE, "projects")
        if args.output == "table":
            table([[n] for n in names], ["PROJECT"])
        else:
            show(args, names)
        return 0
    name = args.name or args.project
    view = call(args, "GET", f"{BASE}/{urllib.parse.quote(name, safe='')}")
    if args.output == "table":
        print(
            f"project {view['name']}"
            + (f": {view['description']}" if view.get("description") else "")
        )
        table(usage_rows(view), ["QUOTA", "USED", "LIMIT", "USE", "LIMIT FROM"])
    else:
        show(args, view)
    return 0
