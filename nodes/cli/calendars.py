"""``cronmesh calendar|blackout list|get|apply|delete [--cluster]``, ``cronmesh freeze --note``,
``cronmesh unfreeze`` and ``cronmesh plan --from --to [--project]`` (issue 21, D236-D240)."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any

from nodes.cli.client import ApiError, call, call_all, proj
from nodes.cli.documents import load_documents
from nodes.cli.output import show, table
from nodes.cli.termsafe import strip_controls

KINDS = {"calendar": "calendars", "blackout": "blackouts"}


def add_parsers(sub: Any) -> None:
    for kind, plural in KINDS.items():
        what = "calendars (days to skip or keep to)" if kind == "calendar" else "blackout windows"
        p = sub.add_parser(kind, help=f"{what} of a project, or of the cluster with --cluster")
        actions = p.add_subparsers(dest="action", required=True)
        ap = actions.add_parser("apply", help=f"create or replace {plural} from a YAML/JSON file")
        ap.add_argument("-f", "--file", required=True, help="the file (- for stdin)")
        actions.add_parser("list", help=f"the {plural}, by name")
        actions.add_parser("get", help=f"one {kind}'s document").add_argument(
            "name", help=f"the {kind}'s name"
        )
        delete_help = (
            "delete it (409 while a job's schedule names it)" if kind == "calendar" else "delete it"
        )
        actions.add_parser("delete", help=delete_help).add_argument(
            "name", help=f"the {kind}'s name"
        )
        for parser in actions.choices.values():
            parser.add_argument(
                "--cluster", action="store_true", help="the cluster's, not a project's"
            )
            parser.set_defaults(func=cmd_document, kind=kind)
    f = sub.add_parser("freeze", help="freeze the cluster: every slot is skipped (cluster admin)")
    f.add_argument("--note", required=True, help="why (shown in /status and the UI)")
    f.set_defaults(func=cmd_freeze, unfreeze=False)
    u = sub.add_parser("unfreeze", help="end the cluster freeze")
    u.set_defaults(func=cmd_freeze, unfreeze=True)
    pl = sub.add_parser("plan", help="simulate the slots of every job in a window")
    pl.add_argument("--from", dest="start", help="ISO 8601 instant (default: now)")
    pl.add_argument("--to", dest="end", help="ISO 8601 instant (default: from + 1 h)")
    pl.add_argument("--project", dest="plan_project", help="one project (default: all you see)")
    pl.add_argument("--limit", type=int, default=200, help="slots listed (default 200)")
    pl.set_defaults(func=cmd_plan)


def _base(args: argparse.Namespace) -> str:
    return ("/api/v1" if args.cluster else proj(args)) + f"/{KINDS[args.kind]}"


def cmd_document(args: argparse.Namespace) -> int:
    base = _base(args)
    if args.action == "apply":
        for doc in load_documents(args.file):
            name = doc.get("name") if isinstance(doc, dict) else None
            if not name:
                raise ApiError(400, {"error": {"message": f"each {args.kind} needs a name"}})
            stored = call(args, "PUT", f"{base}/{urllib.parse.quote(str(name), safe='')}", doc)
            print(f"{args.kind} {strip_controls(stored['name'])} applied")
        return 0
    if args.action == "list":
        items = call_all(args, base, KINDS[args.kind])
        if args.output != "table":
            show(args, items)
        elif args.kind == "calendar":
            table([[c["name"], _calendar_text(c)] for c in items], ["NAME", "DAYS"])
        else:
            table(
                [[w["name"], w["action"], _window_text(w)] for w in items],
                ["NAME", "ACTION", "WHEN"],
            )
        return 0
    path = f"{base}/{urllib.parse.quote(args.name, safe='')}"
    if args.action == "get":
        show(args, call(args, "GET", path))
    else:
        call(args, "DELETE", path)
        print(f"{args.kind} {args.name} deleted")  # as `job delete` says (D509)
    return 0


def _calendar_text(c: dict[str, Any]) -> str:
    parts = [
        f"holidays {h['country']}" + (f"-{h['subdivision']}" if h.get("subdivision") else "")
        for h in c.get("holidays") or []
    ]
    if c.get("dates"):
        parts.append(f"{len(c['dates'])} date(s)")
    bd = c.get("business_days")
    if bd is not None:
        parts.append("business days" if bd.get("nth") is None else f"business day #{bd['nth']}")
    return strip_controls(", ".join(parts))


def _window_text(w: dict[str, Any]) -> str:
    if w.get("cron"):
        return strip_controls(f"{w['cron']} ({w['timezone']}) for {w['duration']}")
    return f"{w['start']} .. {w['end']}"


def cmd_freeze(args: argparse.Namespace) -> int:
    if args.unfreeze:
        data = call(args, "DELETE", "/api/v1/freeze")
    else:
        data = call(args, "PUT", "/api/v1/freeze", {"note": args.note})
    if args.output == "table":
        print("frozen: " + strip_controls(data["note"]) if data["frozen"] else "not frozen")
    else:
        show(args, data)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)}
    for key, value in (("from", args.start), ("to", args.end), ("project", args.plan_project)):
        if value:
            query[key] = value
    data = call(args, "GET", f"/api/v1/plan?{urllib.parse.urlencode(query)}")
    if args.output != "table":
        show(args, data)
        return 0
    print(
        f"{data['from']} .. {data['to']}: {data['jobs']} job(s)"
        + ("  (FROZEN)" if data["frozen"] else "")
    )
    for outcome, n in sorted(data["counts"].items()):
        print(f"  {outcome}: {n}")
    rows = [
        [
            s["tick"],
            f"{s['project']}/{s['job']}",
            s["group"],
            s.get("reason") or s["outcome"],
            s.get("deferred_to", ""),
        ]
        for s in data["slots"]
    ]
    table(
        [[strip_controls(str(c)) for c in r] for r in rows],
        ["TICK", "JOB", "GROUP", "OUTCOME", "DEFERRED TO"],
    )
    if data["truncated"]:
        print("(more slots than listed: narrow the window or raise --limit)")
    for group, minutes in data["starts_per_minute"].items():
        peak = max(minutes.items(), key=lambda x: x[1]) if minutes else ("-", 0)
        print(f"group {strip_controls(group)}: peak {peak[1]} start(s) in the minute {peak[0]}")
    for w in data["warnings"]:
        print(
            f"warning: {w['jobs']} jobs start at {w['at']} on group "
            f"{strip_controls(w['group'])}: {w['hint']}",
            file=sys.stderr,
        )
    return 0
