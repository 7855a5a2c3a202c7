"""CLI of placement: ``cronmesh nodes list|get|enable|disable|drain|shutdown|forget`` and
``cronmesh group list|get|apply|delete|bind|unbind|grant|revoke``."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from nodes.cli.client import ApiError, call, call_all
from nodes.cli.documents import load_documents
from nodes.cli.output import show, table

NODE_ACTIONS = ("list", "get", "enable", "disable", "drain", "shutdown", "forget")


NODE_ACTION_HELP = {
    "list": "every node: up/down, admin state, load, properties, version, heartbeat",
    "get": "one node's document",
    "enable": "let a disabled or drained node take runs again",
    "disable": "take no new runs on the node (running ones go on)",
    "drain": "take no new runs; the node reports drained when its running ones end",
    "shutdown": "ask a live node to stop gracefully (it drains, then exits)",
    "forget": "remove a node that is down from the node list (refused while it is up)",
}


def add_nodes_command(sub: Any) -> None:
    """``cronmesh nodes ACTION [NODE]``: admin actions on nodes through the API (D251)."""
    p = sub.add_parser("nodes", help="list and administer nodes: drain, disable, forget…")
    actions = p.add_subparsers(dest="node_action", required=True, metavar="ACTION")
    for action, helptext in NODE_ACTION_HELP.items():
        a = actions.add_parser(action, help=helptext)
        if action != "list":
            a.add_argument("node_target", metavar="NODE", help="node id")
        if action in ("enable", "disable", "drain"):
            a.add_argument("--reason", help="why (shown in the node list)")
        a.set_defaults(func=cmd_node_admin)


def add_node_actions(parser: argparse.ArgumentParser) -> None:
    """The old spelling ``cronmesh node ACTION [NODE]``: still works for one release, with a
    deprecation note (``nodes.cli.node.cmd_node``), hidden from ``node --help``."""
    parser.add_argument("node_action", nargs="?", metavar="ACTION", help=argparse.SUPPRESS)
    parser.add_argument("node_target", nargs="?", metavar="NODE", help=argparse.SUPPRESS)
    parser.add_argument("--reason", help=argparse.SUPPRESS)


def _ago(stamp: str | None) -> str:
    return stamp[11:19] if stamp else "-"


def cmd_node_admin(args: argparse.Namespace) -> int:
    action = args.node_action
    if action not in NODE_ACTIONS:
        raise ApiError(400, {"error": {"message": f"unknown node action {action!r}"}})
    if action == "list":
        nodes = call(args, "GET", "/api/v1/nodes")["nodes"]
        if args.output == "table":
            table(
                [
                    [
                        n["id"],
                        "up" if n["up"] else "down",
                        n["state"],
                        f"{n['running']}/{n['capacity']}",
                        ",".join(str(s) for s in n.get("shards", [])) or "-",
                        "-"
                        if n["weight_budget"] is None
                        else f"{n['used_weight']}/{n['weight_budget']}",
                        ",".join(f"{k}={v}" for k, v in sorted(n["properties"].items())) or "-",
                        n.get("version") or "-",
                        n.get("owner") or "-",
                        _ago(n.get("last_heartbeat")),
                        n.get("address") or "-",
                    ]
                    for n in nodes
                ],
                [
                    "NODE",
                    "UP",
                    "STATE",
                    "RUNNING",
                    "SHARDS",
                    "WEIGHT",
                    "PROPERTIES",
                    "VERSION",
                    "OWNER",
                    "HEARTBEAT",
                    "ADDRESS",
                ],
            )
        else:
            show(args, nodes)
        return 0
    if not args.node_target:
        raise ApiError(400, {"error": {"message": f"node {action} needs a NODE id"}})
    path = f"/api/v1/nodes/{urllib.parse.quote(args.node_target)}"
    if action == "get":
        show(args, call(args, "GET", path))
        return 0
    if action == "forget":
        call(args, "DELETE", path)
        print(f"node {args.node_target}: forgotten")
        return 0
    reason = getattr(args, "reason", None)  # `nodes shutdown` takes none
    query = f"?{urllib.parse.urlencode({'reason': reason})}" if reason else ""
    doc = call(args, "POST", f"{path}/{action}{query}")
    if action == "shutdown":
        print(f"node {doc['id']}: shutdown requested")
    else:
        print(f"node {doc['id']}: {doc['state']}")
    return 0


def add_group_commands(sub: Any) -> None:
    g = sub.add_parser("group", help="executor groups and their bindings to nodes")
    ga = g.add_subparsers(dest="action", required=True)
    ga.add_parser("list", help="groups with their bindings and projects (a table)")
    ga.add_parser("get", help="one group's document").add_argument("name", help="group name")
    ga.add_parser("delete", help="delete a group and its bindings").add_argument(
        "name", help="group name"
    )
    ap = ga.add_parser("apply", help="create or update groups (with bindings) from YAML/JSON")
    ap.add_argument("-f", "--file", required=True, help="YAML/JSON file (- for stdin)")
    bd = ga.add_parser("bind", help="create or re-point a binding: GROUP BINDING --node N")
    bd.add_argument("group", help="group name")
    bd.add_argument("binding", help="binding name (unique in the group)")
    bd.add_argument("--node", required=True, help="the node the binding points at")
    bd.add_argument("--weight", type=int, default=1, help="share of the group's runs (1..1000)")
    ub = ga.add_parser("unbind", help="delete a binding")
    ub.add_argument("group", help="group name")
    ub.add_argument("binding", help="binding name")
    for verb, what in (("grant", "let a project's jobs target"), ("revoke", "take back")):
        gr = ga.add_parser(verb, help=f"{what} the group ('*': every project)")
        gr.add_argument("group", help="group name")
        gr.add_argument("--project", required=True, help="project name, or '*' for every one")
    tg = ga.add_parser("targets", help="what a project's jobs may target (groups, nodes)")
    tg.add_argument("project", help="project name")
    for parser in ga.choices.values():
        parser.set_defaults(func=cmd_group)


def cmd_group(args: argparse.Namespace) -> int:
    base = "/api/v1/groups"
    q = urllib.parse.quote
    if args.action == "list":
        groups = call_all(args, base, "groups")
        if args.output == "table":
            table(
                [
                    [
                        g["name"],
                        ", ".join(
                            f"{b['name']}->{b['node']}(w{b['weight']})" for b in g["bindings"]
                        )
                        or "-",
                        ",".join(g.get("projects") or []) or "-",
                        g.get("description") or "",
                    ]
                    for g in groups
                ],
                ["GROUP", "BINDINGS", "PROJECTS", "DESCRIPTION"],
            )
        else:
            show(args, groups)
    elif args.action == "get":
        show(args, call(args, "GET", f"{base}/{q(args.name)}"))
    elif args.action == "delete":
        call(args, "DELETE", f"{base}/{q(args.name)}")
        print(f"group {args.name} deleted")
    elif args.action == "apply":
        for doc in load_documents(args.file):
            name = doc.get("name") if isinstance(doc, dict) else None
            if not name:
                raise ApiError(400, {"error": {"message": "each group document needs a name"}})
            bindings = doc.pop("bindings", None) or []
            call(args, "PUT", f"{base}/{q(str(name))}", doc)
            for b in bindings:
                bname = b.get("name") if isinstance(b, dict) else None
                if not bname:
                    raise ApiError(400, {"error": {"message": "each binding needs a name"}})
                call(args, "PUT", f"{base}/{q(str(name))}/bindings/{q(str(bname))}", b)
            print(f"group {name} applied ({len(bindings)} bindings)")
    elif args.action == "bind":
        body = {"node": args.node, "weight": args.weight}
        b = call(args, "PUT", f"{base}/{q(args.group)}/bindings/{q(args.binding)}", body)
        print(f"binding {args.group}/{b['name']} -> {b['node']} (weight {b['weight']})")
    elif args.action == "unbind":
        call(args, "DELETE", f"{base}/{q(args.group)}/bindings/{q(args.binding)}")
        print(f"binding {args.group}/{args.binding} deleted")
    elif args.action in ("grant", "revoke"):
        method = "PUT" if args.action == "grant" else "DELETE"
        g = call(args, method, f"{base}/{q(args.group)}/projects/{q(args.project)}")
        print(f"group {args.group}: projects {', '.join(g['projects']) or '(none)'}")
    elif args.action == "targets":
        doc = call(args, "GET", f"/api/v1/projects/{q(args.project)}/targets")
        if args.output == "table":
            print(f"groups: {', '.join(doc['groups']) or '(none)'}")
            table(
                [[n["node"], n["via"] or "shared"] for n in doc["nodes"]],
                ["NODE", "VIA"],
            )
        else:
            show(args, doc)
    return 0
