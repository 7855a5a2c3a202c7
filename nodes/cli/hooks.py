"""``cronmesh hook set NAME (--job J | --workflow W) [--param P=PATH…] [--auth signature|token]
[--rate N] [--burst N] [--max-body BYTES] [--secret-stdin] [--disable] | list | get NAME |
delete NAME | send NAME [-f PAYLOAD] [--idempotency-key K] [--token]``: a project's named hooks
(docs/api.md, "Hooks"); ``send`` posts a signed delivery as an outside sender would.

A hook's secret is only ever sent (``--secret-stdin``) or, when the server generated it, printed
once by ``set``: no other command or answer shows it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cluster.hooks import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign
from nodes.cli.client import ApiError, call, call_all
from nodes.cli.output import show, table


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("hook", help="named hooks: outside events that start a job or workflow")
    actions = p.add_subparsers(dest="action", required=True)
    s = actions.add_parser("set", help="create or replace a hook")
    s.add_argument("name", help="the hook's name (its URL: /api/v1/hooks/PROJECT/NAME)")
    target = s.add_mutually_exclusive_group(required=True)
    target.add_argument("--job", help="the job a delivery starts")
    target.add_argument("--workflow", help="the workflow a delivery starts")
    s.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="run parameter NAME from the payload's dotted PATH (repeatable)",
    )
    s.add_argument(
        "--auth",
        choices=["signature", "token"],
        default="signature",
        help="signature: X-Cronmesh-Signature (HMAC); token: Authorization: Bearer <secret>",
    )
    s.add_argument("--rate", type=int, help="deliveries per minute (per node)")
    s.add_argument("--burst", type=int, help="deliveries at once")
    s.add_argument("--max-body", type=int, help="largest payload, bytes")
    s.add_argument("--description", help="what sends to this hook (shown in lists)")
    s.add_argument("--disable", action="store_true", help="refuse deliveries for now")
    s.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the secret from stdin (else: kept, or generated for a new hook)",
    )
    ls = actions.add_parser("list", help="the project's hooks (never their secrets)")
    ls.add_argument("--limit", type=int, help="at most this many (one page)")
    ls.add_argument("--after", help="the last name of the previous page")
    actions.add_parser("get", help="one hook (never its secret)").add_argument(
        "name", help="the hook's name"
    )
    actions.add_parser("delete", help="delete a hook").add_argument("name", help="the hook's name")
    d = actions.add_parser(
        "send",
        help="send a signed test delivery (the secret from $CRONMESH_HOOK_SECRET, no user token)",
    )
    d.add_argument("name", help="the hook's name")
    d.add_argument("-f", "--file", default=None, help="the JSON payload (- for stdin; default {})")
    d.add_argument("--idempotency-key", help="the Idempotency-Key header")
    d.add_argument("--token", dest="as_token", action="store_true", help="for a token hook")
    for parser in (p, *actions.choices.values()):
        parser.set_defaults(func=cmd_hook)


def _doc(args: argparse.Namespace) -> dict[str, Any]:
    target = {"job": args.job} if args.job else {"workflow": args.workflow}
    mapping: dict[str, str] = {}
    for item in args.param:
        name, sep, path = item.partition("=")
        if not sep:
            raise OSError(f"--param {item!r}: expected NAME=PATH")
        mapping[name] = path
    doc: dict[str, Any] = {"target": target, "parameters": mapping, "auth": args.auth}
    for field, value in (
        ("rate_per_minute", args.rate),
        ("burst", args.burst),
        ("max_body_bytes", args.max_body),
        ("description", args.description),
    ):
        if value is not None:
            doc[field] = value
    if args.disable:
        doc["enabled"] = False
    if args.secret_stdin:
        doc["secret"] = sys.stdin.readline().rstrip("\r\n")
    return doc


def send(args: argparse.Namespace) -> int:
    """POST one delivery as an outside sender would: signed with the hook's secret."""
    secret = os.environ.get("CRONMESH_HOOK_SECRET", "")
    if not secret:
        raise OSError("set CRONMESH_HOOK_SECRET to the hook's secret")
    if args.file == "-":
        body = sys.stdin.buffer.read()
    elif args.file:
        body = Path(args.file).read_bytes()
    else:
        body = b"{}"
    path = f"/api/v1/hooks/{urllib.parse.quote(args.project)}/{urllib.parse.quote(args.name)}"
    req = urllib.request.Request(args.api.rstrip("/") + path, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    if args.as_token:
        req.add_header("Authorization", f"Bearer {secret}")
    else:
        req.add_header(SIGNATURE_HEADER, sign(secret.encode(), int(time.time()), body))
    if args.idempotency_key:
        req.add_header(IDEMPOTENCY_HEADER, args.idempotency_key)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            parsed = json.loads(exc.read())
        except ValueError:
            parsed = {"error": {"message": exc.reason}}
        raise ApiError(exc.code, parsed) from None
    except urllib.error.URLError as exc:
        raise OSError(f"cannot reach {args.api}: {exc.reason}") from None
    if args.output == "table":
        started = data.get("run") or data.get("execution")
        again = " (replayed: the first delivery's)" if data.get("replayed") else ""
        print(f"started {'run' if data.get('run') else 'execution'} {started}{again}")
    else:
        show(args, data)
    return 0


def cmd_hook(args: argparse.Namespace) -> int:
    if args.action == "send":
        return send(args)
    base = f"/api/v1/projects/{urllib.parse.quote(args.project)}/hooks"
    if args.action == "set":
        name = urllib.parse.quote(args.name, safe="")
        hook = call(args, "PUT", f"{base}/{name}", _doc(args))
        print(f"hook {args.project}/{hook['name']} set: POST {hook['url']}")
        if hook.get("secret"):
            print(f"secret (shown once): {hook['secret']}")
    elif args.action == "list":
        if args.after or args.limit:
            query = urllib.parse.urlencode(
                {k: v for k, v in (("limit", args.limit), ("after", args.after)) if v}
            )
            hooks = call(args, "GET", f"{base}?{query}")["hooks"]
        else:
            hooks = call_all(args, base, "hooks")
        if args.output == "table":
            rows = [
                [
                    h["name"],
                    f"{next(iter(k for k in ('job', 'workflow') if h['target'].get(k)))} "
                    f"{h['target'].get('job') or h['target'].get('workflow')}",
                    h["auth"],
                    f"{h['rate_per_minute']}/min",
                    "yes" if h["enabled"] else "no",
                ]
                for h in hooks
            ]
            table(rows, ["NAME", "TARGET", "AUTH", "RATE", "ENABLED"])
        else:
            show(args, {"hooks": hooks})
    elif args.action == "get":
        show(args, call(args, "GET", f"{base}/{urllib.parse.quote(args.name, safe='')}"))
    elif args.action == "delete":
        call(args, "DELETE", f"{base}/{urllib.parse.quote(args.name, safe='')}")
        print(f"hook {args.project}/{args.name} deleted")
    return 0
