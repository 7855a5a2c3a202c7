"""``cronmesh inspect``: the decoded etcd view (reads etcd directly; no node needed)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import yaml

from cluster.errors import CronmeshError, InvalidInput
from cluster.etcd import Etcd, Security
from cluster.keys import Keys
from nodes.cli import state_view
from nodes.config_sources import read_secret


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "inspect", help="decoded view of the cluster's etcd state (nodes, leader, queue, claims)"
    )
    p.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=["all", "nodes", "leader", "queue", "claims", "job"],
        help="what to show (default all)",
    )
    p.add_argument("name", nargs="?", help="job name (with 'job')")
    p.add_argument(
        "--etcd",
        default=os.environ.get("CRONMESH_ETCD", "http://127.0.0.1:2379"),
        help="etcd endpoints, comma-separated (CRONMESH_ETCD)",
    )
    p.add_argument(
        "--prefix",
        default=os.environ.get("CRONMESH_PREFIX", "/cronmesh"),
        help="etcd key prefix (CRONMESH_PREFIX, default /cronmesh)",
    )
    # etcd with authentication or TLS (`cronmesh dev`'s, the Helm chart's): as a node reaches it
    for flag, var, text in (
        ("--etcd-user", "CRONMESH_ETCD_USER", "etcd user (with --etcd-password-file)"),
        (
            "--etcd-password-file",
            "CRONMESH_ETCD_PASSWORD_FILE",
            "file holding the etcd user's password",
        ),
        ("--etcd-ca", "CRONMESH_ETCD_CA", "CA certificate that signed etcd's server certificate"),
        ("--etcd-cert", "CRONMESH_ETCD_CERT", "client certificate for etcd"),
        ("--etcd-key", "CRONMESH_ETCD_KEY", "client certificate key for etcd"),
    ):
        p.add_argument(flag, default=os.environ.get(var) or None, help=f"{text} ({var})")
    p.set_defaults(func=cmd_inspect)


# What etcd answers a request without the user it requires.
_NO_USER = "user name is empty"


def _security(args: argparse.Namespace) -> Security:
    password = read_secret(
        os.environ.get("CRONMESH_ETCD_PASSWORD"), args.etcd_password_file, "etcd_password"
    )
    if args.etcd_user and password is None:
        raise InvalidInput("--etcd-user needs --etcd-password-file", field="etcd_user")
    return Security(
        ca=args.etcd_ca,
        cert=args.etcd_cert,
        key=args.etcd_key,
        user=args.etcd_user,
        password=password,
    )


async def _gather(args: argparse.Namespace) -> Any:
    keys = Keys(args.prefix)
    endpoints = [e.strip() for e in args.etcd.split(",") if e.strip()]
    async with Etcd(endpoints, timeout=5, security=_security(args)) as etcd:
        if args.what == "nodes":
            return await state_view.nodes(etcd, keys)
        if args.what == "leader":
            return await state_view.election(etcd, keys)
        if args.what == "queue":
            return await state_view.queue(etcd, keys)
        if args.what == "claims":
            return await state_view.claims(etcd, keys)
        if args.what == "job":
            if not args.name:
                raise CronmeshError("inspect job needs a job name", field="name")
            found = await state_view.job(etcd, keys, args.project, args.name)
            if found is None:
                raise CronmeshError(f"no job {args.project}/{args.name} under {args.prefix}")
            return found
        return await state_view.overview(etcd, keys)


def _table(what: str, data: Any) -> None:
    if what in ("nodes", "all"):
        rows = data if what == "nodes" else data["nodes"]
        if what == "all":
            el = data["election"]
            q = data["queue"]
            print(
                f"leader: {el['leader'] or '-'}  queue depth: {q['depth']}  claims: "
                f"{len(data['claims'])}  prefix: {data['prefix']}"
            )
        print(f"{'NODE':<24} {'STATE':<6} {'ADDRESS':<28} {'LEASE':<18} VERSION")
        for n in rows:
            state = "up" if n["up"] else "down"
            print(
                f"{n['id']:<24} {state:<6} {n['address'] or '-':<28} "
                f"{n['lease'] or '-':<18} {n['version'] or '-'}"
            )
        if what == "nodes":
            return
        data = data["claims"]
        what = "claims"
    if what == "claims":
        print(f"{'RUN':<20} {'JOB':<32} {'NODE':<24} {'ATTEMPT':<8} CLAIM REV")
        for c in data:
            job = f"{c.get('project')}/{c.get('job')}"
            print(
                f"{c['run']:<20} {job:<32} {c.get('node', '-'):<24} "
                f"{c.get('attempt', '-')!s:<8} {c['claim_revision']}"
            )
    elif what == "queue":
        print(f"queue depth: {data['depth']}")
        print(f"{'RUN':<20} {'JOB':<32} {'PRIO':<6} {'ATTEMPT':<8} NOT BEFORE")
        for e in data["entries"]:
            job = f"{e['project']}/{e['job']}"
            print(
                f"{e['run']:<20} {job:<32} {e['priority']:<6} {e['attempt']!s:<8} "
                f"{e['not_before'] or '-'}"
            )
    elif what == "leader":
        print(f"leader: {data['leader'] or '-'} (fencing revision {data['fencing_revision']})")
        for c in data["candidates"]:
            print(f"  candidate {c['node']:<24} lease {c['lease']} rev {c['create_revision']}")
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        data = asyncio.run(_gather(args))
    except CronmeshError as exc:
        hint = ""
        if _NO_USER in exc.message and not args.etcd_user:  # D510
            hint = (
                "; this etcd requires a user: give --etcd-user and --etcd-password-file (a"
                " `cronmesh dev` cluster: --etcd-user cronmesh --etcd-password-file"
                " .cronmesh-dev/etcd-password)"
            )
        print(f"cronmesh: {exc.message}{hint}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(data, indent=2, default=str))
    elif args.output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        _table(args.what, data)
    return 0
