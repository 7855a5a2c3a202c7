"""CLI of budgets (D274): ``cronmesh budget list|get|apply|delete``."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from nodes.cli.client import ApiError, call, call_all
from nodes.cli.documents import load_documents
from nodes.cli.output import show, table

BASE = "/api/v1/budgets"


def add_parsers(sub: Any) -> None:
    b = sub.add_parser("budget", help="cluster-wide limits on starts and concurrent runs")
    ba = b.add_subparsers(dest="action", required=True)
    ba.add_parser("list", help="budgets with their use (a table)")
    ba.add_parser("get", help="one budget's document and use").add_argument(
        "name", help="budget name"
    )
    ba.add_parser("delete", help="delete a budget no job names").add_argument(
        "name", help="budget name"
    )
    ap = ba.add_parser("apply", help="create or update budgets from YAML/JSON (cluster admin)")
    ap.add_argument("-f", "--file", required=True, help="YAML/JSON file (- for stdin)")
    for parser in ba.choices.values():
        parser.set_defaults(func=cmd_budget)


def _use(b: dict[str, Any]) -> list[str]:
    use = b.get("use") or {}
    running = f"{use['running']}/{use['concurrent']}" if "running" in use else "-"
    starts = use.get("starts")
    per = (b.get("starts") or {}).get("per")
    rate = f"{starts['count']}/{starts['limit']} per {per}" if starts else "-"
    return [running, rate]


def cmd_budget(args: argparse.Namespace) -> int:
    q = urllib.parse.quote
    if args.action == "list":
        budgets = call_all(args, BASE, "budgets")
        if args.output == "table":
            table(
                [
                    [
                        b["name"],
                        *_use(b),
                        ",".join((b.get("match") or {}).get("tags") or []) or "-",
                        ",".join(b.get("projects") or ["*"]),
                    ]
                    for b in budgets
                ],
                ["BUDGET", "RUNNING", "STARTS", "TAGS", "PROJECTS"],
            )
        else:
            show(args, budgets)
    elif args.action == "get":
        show(args, call(args, "GET", f"{BASE}/{q(args.name)}"))
    elif args.action == "delete":
        call(args, "DELETE", f"{BASE}/{q(args.name)}")
        print(f"budget {args.name} deleted")
    else:
        for doc in load_documents(args.file):
            name = doc.get("name") if isinstance(doc, dict) else None
            if not name:
                raise ApiError(400, {"error": {"message": "each budget document needs a name"}})
            call(args, "PUT", f"{BASE}/{q(str(name))}", doc)
            print(f"budget {name} applied")
    return 0
