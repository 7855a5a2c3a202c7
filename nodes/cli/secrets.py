"""``cronmesh secret set NAME (--from-file F | --value-stdin) | list | get NAME | delete NAME |
rotate [--dry-run] | keygen``: a project's secrets (docs/security.md, "Secrets").

Values are only ever sent: nothing here prints one (the API answers none)."""

from __future__ import annotations

import argparse
import base64
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from nodes.cli.client import call
from nodes.cli.output import show, table


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("secret", help="a project's secrets (write-only values)")
    actions = p.add_subparsers(dest="action", required=True)
    s = actions.add_parser("set", help="create or replace a secret's value")
    s.add_argument("name", help="secret name")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-file", metavar="FILE", help="the file's bytes, exactly")
    src.add_argument(
        "--value-stdin",
        action="store_true",
        help="read the value from stdin (one trailing newline removed)",
    )
    ls = actions.add_parser("list", help="names and metadata, never values")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    ls.add_argument("--after", help="the last name of the previous page")
    actions.add_parser("get", help="metadata of one secret").add_argument(
        "name", help="secret name"
    )
    actions.add_parser("delete", help="delete a secret no job uses").add_argument(
        "name", help="secret name"
    )
    rot = actions.add_parser(
        "rotate", help="re-encrypt every project's secrets under the current key (cluster admin)"
    )
    rot.add_argument("--dry-run", action="store_true", help="only count values per key")
    actions.add_parser("keygen", help="print a new key line for the secrets key file")
    for parser in (p, *actions.choices.values()):
        parser.set_defaults(func=cmd_secret)


def cmd_secret(args: argparse.Namespace) -> int:
    return _run(args)  # errors are reported by nodes.cli.main.main, as for every command


def read_value(args: argparse.Namespace) -> bytes:
    if args.from_file:
        return Path(args.from_file).read_bytes()
    data = sys.stdin.buffer.read()
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith(b"\n") else data


def _run(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        from cluster.secretbox import new_key

        print(new_key())
        return 0
    if args.action == "rotate":
        query = "?dry_run=1" if args.dry_run else ""
        data = call(args, "POST", f"/api/v1/secrets/rotate{query}")
        if args.output == "table":
            verb = "would re-encrypt" if args.dry_run else "re-encrypted"
            print(f"current key {data['current_key']}; {verb} {data['rotated']} value(s)")
            table(
                [[k, str(n)] for k, n in sorted(data["values_by_key"].items())], ["KEY", "VALUES"]
            )
            for f in data["failed"]:
                print(f"failed: {f['project']}/{f['name']}: {f['error']}", file=sys.stderr)
            hooks = data.get("hooks") or {"rotated": 0, "failed": []}
            print(f"hook secrets: {verb} {hooks['rotated']}")
            for f in hooks["failed"]:
                print(f"failed: hook {f['project']}/{f['hook']}: {f['error']}", file=sys.stderr)
            return 1 if data["failed"] or hooks["failed"] else 0
        show(args, data)
        return 0
    base = f"/api/v1/projects/{urllib.parse.quote(args.project)}/secrets"
    if args.action == "set":
        value = read_value(args)
        name = urllib.parse.quote(args.name, safe="")
        meta = call(
            args, "PUT", f"{base}/{name}", {"value_base64": base64.b64encode(value).decode()}
        )
        print(
            f"secret {args.project}/{meta['name']} set ({len(value)} bytes, key {meta['key_id']})"
        )
    elif args.action == "list":
        query = urllib.parse.urlencode(
            {k: v for k, v in (("limit", args.limit), ("after", args.after)) if v}
        )
        data = call(args, "GET", f"{base}?{query}")
        if args.output == "table":
            table(
                [
                    [s["name"], s["updated_at"], s.get("updated_by") or "-", s["key_id"]]
                    for s in data["secrets"]
                ],
                ["NAME", "UPDATED", "BY", "KEY"],
            )
            if data.get("next"):
                print(f"(more: --after {data['next']})")
        else:
            show(args, data)
    elif args.action == "get":
        show(args, call(args, "GET", f"{base}/{urllib.parse.quote(args.name, safe='')}"))
    elif args.action == "delete":
        call(args, "DELETE", f"{base}/{urllib.parse.quote(args.name, safe='')}")
        print(f"secret {args.project}/{args.name} deleted")
    return 0
