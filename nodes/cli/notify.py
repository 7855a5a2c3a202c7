"""``cronmesh notifications get|set -f FILE|clear``: a project's default notification rules."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from nodes.cli import yamlio
from nodes.cli.client import call
from nodes.cli.output import show


def add_parser(sub: Any) -> None:
    p = sub.add_parser("notifications", help="the project's default notification rules")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("get", help="print the rules")
    s = actions.add_parser("set", help="replace the rules from a YAML/JSON file (- for stdin)")
    s.add_argument("-f", "--file", required=True)
    actions.add_parser("clear", help="remove the rules")
    for parser in (p, *actions.choices.values()):
        parser.set_defaults(func=cmd_notifications)


def cmd_notifications(args: argparse.Namespace) -> int:
    return _run(args)  # errors are reported by nodes.cli.main.main, as for every command


def _run(args: argparse.Namespace) -> int:
    path = f"/api/v1/projects/{urllib.parse.quote(args.project)}/notifications"
    if args.action == "get":
        data = call(args, "GET", path)
        if args.output == "json":
            show(args, data)
        else:
            print(yaml.safe_dump(data, sort_keys=False), end="")
    elif args.action == "set":
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        doc = yamlio.load(text) or {}
        if isinstance(doc, list):
            doc = {"rules": doc}
        call(args, "PUT", path, doc)
        print(f"notifications of project {args.project} set ({len(doc.get('rules', []))} rules)")
    else:
        call(args, "DELETE", path)
        print(f"notifications of project {args.project} cleared")
    return 0
