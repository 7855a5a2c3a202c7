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
    s.add_argument("-f", "--file", required=True, help="YAML/JSON file (- for stdin)")
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


# -- cluster settings: the webhook allow-list and the caps on manual runs (D170, D173) -----------


def add_settings_parser(sub: Any) -> None:
    p = sub.add_parser(
        "settings", help="cluster settings: webhook allow-list, caps on manual runs, shards"
    )
    kinds = p.add_subparsers(dest="kind", required=True)
    hooks = kinds.add_parser("webhooks", help="where webhooks may go besides public addresses")
    hooks.add_argument(
        "--allow",
        action="append",
        metavar="ENTRY",
        help="replace the allow-list (repeat; CIDR, address or host name, optional :port); "
        "--allow '' clears it; without --allow: print it",
    )
    limits = kinds.add_parser(
        "run-limits", help="caps on manual runs: cluster defaults, or one project's (-p)"
    )
    limits.add_argument("--project-override", action="store_true", help="of the -p project")
    limits.add_argument("--max-pending-runs", type=int, help="unfinished manual runs allowed")
    limits.add_argument("--runs-per-second", type=float, help="manual runs per second, sustained")
    limits.add_argument("--run-burst", type=int, help="manual runs allowed at once above the rate")
    limits.add_argument("--clear", action="store_true", help="drop the project's overrides")
    shards = kinds.add_parser(
        "scheduler-shards", help="how many shards the scheduling loop is split into, who leads each"
    )
    shards.add_argument("--set", type=int, metavar="K", help="split into K shards (1..64)")
    for parser in (p, hooks, limits, shards):
        parser.set_defaults(func=cmd_settings)


def cmd_settings(args: argparse.Namespace) -> int:
    if args.kind == "scheduler-shards":  # D300
        path = "/api/v1/settings/scheduler-shards"
        if args.set is None:
            show(args, call(args, "GET", path))
        else:
            answer = call(args, "PUT", path, {"shards": args.set})
            show(args, answer)
            if answer.get("changed") and args.output == "table":  # every leader was deposed
                print(
                    f"every shard leader stepped down; the nodes campaign under {args.set} "
                    "shard(s): leaders show in `cronmesh settings scheduler-shards` within "
                    "seconds",
                    file=sys.stderr,
                )
        return 0
    if args.kind == "webhooks":
        path = "/api/v1/settings/webhooks"
        if args.allow is None:
            show(args, call(args, "GET", path))
        else:
            show(args, call(args, "PUT", path, {"allow": [e for e in args.allow if e]}))
        return 0
    if args.project_override:
        path = f"/api/v1/projects/{urllib.parse.quote(args.project)}/run-limits"
    else:
        path = "/api/v1/settings/run-limits"
    wanted = {
        "max_pending_runs": args.max_pending_runs,
        "runs_per_second": args.runs_per_second,
        "run_burst": args.run_burst,
    }
    if args.clear and args.project_override:
        call(args, "DELETE", path)
        print(f"run limits of project {args.project}: overrides removed")
    elif any(v is not None for v in wanted.values()):
        show(args, call(args, "PUT", path, {k: v for k, v in wanted.items() if v is not None}))
    else:
        show(args, call(args, "GET", path))
    return 0
