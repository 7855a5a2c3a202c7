"""CLI credentials and identity commands: ``login``, ``logout``, ``whoami``, ``passwd``, ``user``,
``token``.

A token comes from ``--token``, else ``CRONMESH_TOKEN``, else the credentials file written by
``cronmesh login`` (``$CRONMESH_CREDENTIALS`` or ``~/.config/cronmesh/credentials.json``, mode
0600, one token per API URL).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from nodes.cli.client import ApiError, call, call_all
from nodes.cli.credentials import load_credentials, save_credentials
from nodes.cli.output import show, table


def cmd_login(args: argparse.Namespace) -> int:
    username = args.username or input("user name: ")
    password = os.environ.get("CRONMESH_PASSWORD") if args.password_stdin is False else None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        password = getpass.getpass("password: ")
    reply = _log_in(args, username, password)
    if reply["user"].get("must_change_password"):
        # a generated first-admin password: nothing works until it is changed (D169)
        if args.password_stdin or not sys.stdin.isatty():
            print(
                "this account must choose a new password before anything else: run "
                "`cronmesh passwd`",
                file=sys.stderr,
            )
            return 0
        print("this account must choose a new password now", file=sys.stderr)
        reply = _change_password(args, username, password, _ask_new_password())
    print(f"logged in to {args.api} as {username} (until {reply['expires_at']})")
    return 0


def _log_in(args: argparse.Namespace, username: str, password: str) -> dict[str, Any]:
    """Log in and store the session token for this API URL."""

    reply: dict[str, Any] = call(
        args, "POST", "/api/v1/auth/login", {"username": username, "password": password}
    )
    data = load_credentials()
    data[args.api.rstrip("/")] = {
        "user": username,
        "token": reply["token"],
        "expires_at": reply["expires_at"],
    }
    save_credentials(data)
    args.token = reply["token"]
    return reply


def _ask_new_password() -> str:
    new = getpass.getpass("new password: ")
    if new != getpass.getpass("new password again: "):
        raise SystemExit("cronmesh: the two passwords differ")
    return new


def _change_password(
    args: argparse.Namespace, username: str, current: str, new: str
) -> dict[str, Any]:
    """Change one's own password, then log in again (the change ends every session)."""

    call(
        args,
        "PUT",
        f"/api/v1/users/{username}/password",
        {"password": new, "current_password": current},
    )
    return _log_in(args, username, new)


def cmd_passwd(args: argparse.Namespace) -> int:
    """``cronmesh passwd``: change your own password (``--password-stdin``: current, then new)."""

    username = call(args, "GET", "/api/v1/auth/me")["user"]["name"]
    if args.password_stdin:
        current = sys.stdin.readline().rstrip("\n")
        new = sys.stdin.readline().rstrip("\n")
    else:
        current = getpass.getpass("current password: ")
        new = _ask_new_password()
    _change_password(args, username, current, new)
    print(f"password of {username} changed; logged in again")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    data = load_credentials()
    entry = data.pop(args.api.rstrip("/"), None)
    if entry is not None:
        args.token = entry.get("token")
        try:
            call(args, "POST", "/api/v1/auth/logout")
        except ApiError as exc:
            if exc.status not in (401, 0):
                raise
        save_credentials(data)
    print(f"logged out of {args.api}")
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    me = call(args, "GET", "/api/v1/auth/me")
    if args.output == "table":
        roles = ", ".join(f"{p}={r}" for p, r in sorted(me["user"]["roles"].items())) or "-"
        print(f"{me['user']['name']}  roles: {roles}")
    else:
        show(args, me)
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    if args.action == "list":
        users = call_all(args, "/api/v1/users", "users")
        if args.output == "table":
            rows = [
                [
                    u["name"],
                    "yes" if u["enabled"] else "no",
                    ", ".join(f"{p}={r}" for p, r in sorted(u["roles"].items())) or "-",
                ]
                for u in users
            ]
            table(rows, ["NAME", "ENABLED", "ROLES"])
        else:
            show(args, users)
        return 0
    if args.action == "create":
        body: dict[str, Any] = {"name": args.name, "roles": _grants(args.role)}
        if args.password_stdin:
            body["password"] = sys.stdin.readline().rstrip("\n")
        for field in ("display_name", "email"):
            if getattr(args, field):
                body[field] = getattr(args, field)
        call(args, "POST", "/api/v1/users", body)
        print(f"user {args.name} created")
    elif args.action == "grant":
        user = call(args, "GET", f"/api/v1/users/{args.name}")
        roles = {**user["roles"], **_grants(args.role)}
        call(args, "PATCH", f"/api/v1/users/{args.name}", {"roles": roles})
        print(f"user {args.name}: roles {', '.join(f'{p}={r}' for p, r in sorted(roles.items()))}")
    elif args.action in ("enable", "disable"):
        call(args, "PATCH", f"/api/v1/users/{args.name}", {"enabled": args.action == "enable"})
        print(f"user {args.name} {args.action}d")
    elif args.action == "delete":
        call(args, "DELETE", f"/api/v1/users/{args.name}")
        print(f"user {args.name} deleted")
    return 0


def _grants(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        project, sep, role = item.partition("=")
        if not sep:
            raise SystemExit(f"cronmesh: --role {item!r} must look like PROJECT=ROLE (or *=ROLE)")
        out[project] = role
    return out


def cmd_token(args: argparse.Namespace) -> int:
    user = args.user or call(args, "GET", "/api/v1/auth/me")["user"]["name"]
    base = f"/api/v1/users/{user}/tokens"
    if args.action == "create":
        body: dict[str, Any] = {"description": args.description or ""}
        if args.expires_in is not None:  # 0 is a mistake to answer, not "never" (D509)
            body["expires_in"] = args.expires_in
        if args.scope:
            body["scope"] = args.scope
        created = call(args, "POST", base, body)
        if args.output == "table":
            print(created["token"])
            print(f"(token {created['id']}; shown once, store it now)", file=sys.stderr)
        else:
            show(args, created)
    elif args.action == "list":
        found = call(args, "GET", base)["tokens"]
        if args.output == "table":
            rows = [
                [
                    t["id"],
                    t["kind"] if t.get("scope", "all") == "all" else f"{t['kind']}/{t['scope']}",
                    t["description"] or "-",
                    t["expires_at"] or "never",
                ]
                for t in found
            ]
            table(rows, ["ID", "KIND", "DESCRIPTION", "EXPIRES"])
        else:
            show(args, found)
    elif args.action == "revoke":
        call(args, "DELETE", f"{base}/{args.id}")
        print(f"token {args.id} revoked")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """``cronmesh audit list`` (newest first) and ``cronmesh audit export`` (to the log store)."""
    from urllib.parse import urlencode

    if args.action == "export":
        done = call(args, "POST", "/api/v1/audit/export")
        if args.output == "table":
            print(f"exported {done['exported']} entries (cursor {done['cursor'] or '-'})")
            for url in done["urls"]:
                print(url)
        else:
            show(args, done)
        return 0
    query = {"limit": args.limit, "kind": args.kind}
    if args.actor:
        query["actor"] = args.actor
    entries = call(args, "GET", f"/api/v1/audit?{urlencode(query)}")["entries"]
    if args.output == "table":
        rows = [
            [
                e["id"],
                e.get("at", "")[:19],
                e.get("actor", "-"),
                f"{e.get('method', '')} {e.get('path', '')}",
                str(e.get("status", "")),
                e.get("outcome", "") + (f" x{e['count']}" if e.get("count", 1) > 1 else ""),
            ]
            for e in entries
        ]
        table(rows, ["ID", "AT", "ACTOR", "REQUEST", "STATUS", "OUTCOME"])
    else:
        show(args, entries)
    return 0


def add_commands(sub: Any) -> None:
    lg = sub.add_parser("login", help="log in and store a token for this API URL (0600 file)")
    lg.add_argument("-u", "--username", help="user name (asked when not given)")
    lg.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    lg.set_defaults(func=cmd_login)
    sub.add_parser("logout", help="revoke and forget the stored token").set_defaults(
        func=cmd_logout
    )
    sub.add_parser("whoami", help="the authenticated user and roles").set_defaults(func=cmd_whoami)
    pw = sub.add_parser("passwd", help="change your own password (then logs in again)")
    pw.add_argument(
        "--password-stdin", action="store_true", help="read the current, then the new from stdin"
    )
    pw.set_defaults(func=cmd_passwd)

    u = sub.add_parser("user", help="manage users (admin)").add_subparsers(
        dest="action", required=True
    )
    u.add_parser("list", help="users and their roles (a table)")
    cr = u.add_parser("create", help="create a user")
    cr.add_argument("name", help="user name")
    cr.add_argument("--role", action="append", help="PROJECT=ROLE or *=ROLE (repeatable)")
    cr.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    cr.add_argument("--display-name", dest="display_name", help="name shown in the web UI")
    cr.add_argument("--email", help="e-mail address")
    gr = u.add_parser("grant", help="add or change role grants")
    gr.add_argument("name", help="user name")
    gr.add_argument("--role", action="append", required=True, help="PROJECT=ROLE (repeatable)")
    for action, helptext in (
        ("enable", "let a disabled user log in again"),
        ("disable", "refuse the user's logins and tokens (kept, can be enabled)"),
        ("delete", "delete a user"),
    ):
        u.add_parser(action, help=helptext).add_argument("name", help="user name")
    for parser in u.choices.values():
        parser.set_defaults(func=cmd_user)

    au = sub.add_parser("audit", help="the audit log (cluster admin)").add_subparsers(
        dest="action", required=True
    )
    al = au.add_parser("list", help="entries, newest first")
    al.add_argument("--actor", help="only this user's entries")
    al.add_argument(
        "--kind",
        choices=["all", "changes", "denied", "own"],
        default="all",
        help="all (default), changes, refusals (denied) or your own",
    )
    al.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    au.add_parser("export", help="copy entries newer than the last export to the log store")
    for parser in au.choices.values():
        parser.set_defaults(func=cmd_audit)

    t = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    tc = t.add_parser("create", help="create an API token (printed once)")
    tc.add_argument("--description", help="what the token is for (shown in token list)")
    tc.add_argument(
        "--expires-in", type=int, help="seconds until it expires, at least 60 (default never)"
    )
    tc.add_argument(
        "--scope", choices=["all", "metrics"], help="metrics: reads /metrics and /status only"
    )
    t.add_parser("list", help="tokens: id, kind, description, expiry (never the secret)")
    t.add_parser("revoke", help="revoke a token at once").add_argument("id", help="token id")
    for parser in t.choices.values():
        parser.add_argument("--user", help="whose tokens (default: yourself)")
        parser.set_defaults(func=cmd_token)


NODE_FLAGS = {
    "admin_user": ("--admin-user", "first admin's user name (CRONMESH_ADMIN_USER, default admin)"),
    "admin_password_file": ("--admin-password-file", "file holding the first admin's password"),
    "admin_token_file": ("--admin-token-file", "file holding the first admin's API token"),
    "smtp_url_file": ("--smtp-url-file", "file holding the SMTP URL (it may hold a password)"),
    "public_url": ("--public-url", "URL people open the web UI at: links in notifications"),
    "security_level": ("--security-level", "node-to-node security: 0 none, 1 signed (default)"),
    "peer_secret_file": ("--peer-secret-file", "file holding the cluster's peer HMAC secret"),
    "etcd_ca": ("--etcd-ca", "CA certificate that signed etcd's server certificate"),
    "etcd_cert": ("--etcd-cert", "client certificate for etcd"),
    "etcd_key": ("--etcd-key", "client certificate key for etcd"),
    "etcd_user": ("--etcd-user", "etcd user (with --etcd-password-file)"),
    "etcd_password_file": ("--etcd-password-file", "file holding the etcd user's password"),
    "metrics_token_file": ("--metrics-token-file", "file with a token for /metrics, /status only"),
    "trusted_proxies": ("--trusted-proxies", "CIDRs of proxies whose X-Forwarded-* are believed"),
    "admin_password_out": ("--admin-password-out", "file for a generated first-admin password"),
    "secrets_key_file": ("--secrets-key-file", "key ring for project secrets (AES-256-GCM)"),
}


def add_node_flags(parser: argparse.ArgumentParser) -> None:
    """Identity and security flags of ``cronmesh node`` (each also has a CRONMESH_* variable)."""
    for name, (flag, help_text) in NODE_FLAGS.items():
        parser.add_argument(
            flag, dest=name, help=help_text, type=int if name == "security_level" else str
        )


def node_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name, None) for name in NODE_FLAGS}


def check_node_config(config: Any) -> None:
    """Fail at start, with a clear message, on unreadable or unusable security settings."""
    from cluster.errors import InvalidInput
    from cluster.passwords import check_password_rules
    from nodes.config_sources import etcd_security, read_secret
    from nodes.executor.runas import node_policy

    etcd_security(config)
    node_policy(config)
    if config.secrets_key_file:
        from nodes.runtime.secretkeys import read_key_file

        read_key_file(config.secrets_key_file)
    read_secret(config.peer_secret, config.peer_secret_file, "peer_secret")
    metrics = read_secret(config.metrics_token, config.metrics_token_file, "metrics_token")
    if metrics is not None and len(metrics) < 20:
        raise InvalidInput("metrics_token must be at least 20 characters", field="metrics_token")
    password = read_secret(config.admin_password, config.admin_password_file, "admin_password")
    if password is not None:
        check_password_rules(password, "admin_password")
