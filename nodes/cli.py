"""The ``cronmesh`` command: run a node (``node``), a local cluster (``dev``), and talk to the API.

API commands read ``--api`` (or ``CRONMESH_API``, default http://127.0.0.1:8080) and ``--project``
(or ``CRONMESH_PROJECT``, default ``default``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from cluster.errors import CronmeshError
from nodes import cli_auth, cli_logs, cli_placement, etcd_auth, yamlio
from nodes.cli_ops import add_ops_parsers


def setup_logging(fmt: str = "auto", level: int = logging.INFO) -> None:
    from nodes.logs import configure

    configure(fmt, level)


# -- node ---------------------------------------------------------------------------------------


def cmd_node(args: argparse.Namespace) -> int:
    import uvloop

    if args.node_action:  # `cronmesh node list|get|enable|disable|drain|shutdown`
        return cli_placement.cmd_node_admin(args)

    from nodes import jobenv, workdir
    from nodes.config import SECRET_VARIABLES, load_config
    from nodes.daemon import Node

    flags = {
        "node_id": args.node_id,
        "etcd": args.etcd,
        "listen": args.listen,
        "advertise": args.advertise,
        "prefix": args.prefix,
        "lease_ttl": args.lease_ttl,
        "capacity": args.capacity,
        "weight_budget": args.weight_budget,
        "owner": args.owner,
        "machine_id": args.machine_id,
        "handoff_delay": args.handoff_delay,
        "materialize_ahead": args.materialize_ahead,
        "properties": args.property or None,
        "data_dir": args.data_dir,
        "log_dir": args.log_dir,
        "drain_timeout": args.drain_timeout,
        "log_format": args.log_format,
        "cgroups": args.cgroups,
        **cli_auth.node_flags(args),
        "log_store": args.log_store,
        "s3_endpoint": args.s3_endpoint,
        "s3_region": args.s3_region,
        "job_env": args.job_env or None,
        "job_env_passthrough": args.job_env_passthrough,
        "run_as_users": args.run_as_users,
        "run_as_default": args.run_as_default,
        "run_uid_range": args.run_uid_range,
        "allow_root_jobs": True if args.allow_root_jobs else None,
    }
    from nodes import gctune

    try:
        config = load_config(flags, file=args.config)
        cli_auth.check_node_config(config)
        # Read once; from here on the node's environment holds no secret (D141).
        jobenv.scrub_secrets(SECRET_VARIABLES)
        jobenv.protect_process()  # no ptrace or /proc/<pid>/mem by a job of the same user
        workdir.private_umask()  # files 0600, folders 0700; jobs keep the umask we had (D143)
        gctune.tune()  # after start-up: what it built is frozen out of the collector (D138)
    except CronmeshError as exc:
        print(f"cronmesh: {exc.message}", file=sys.stderr)
        return 2
    setup_logging(config.log_format)

    async def main() -> None:
        import asyncio

        node = Node(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.shutdown)
        collections = asyncio.create_task(gctune.full_collections())
        try:
            await node.run()
        finally:
            collections.cancel()
        if node.fatal:
            print(f"cronmesh: {node.fatal}", file=sys.stderr)
            raise SystemExit(2)

    uvloop.run(main())
    return 0


# -- HTTP client --------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        err = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(err.get("message") or str(body))


def call_all(args: argparse.Namespace, path: str, key: str) -> list[Any]:
    """Every item of a paged listing (``?after=&limit=``, answers carry ``next``)."""
    items: list[Any] = []
    after: str | None = None
    sep = "&" if "?" in path else "?"
    for _ in range(100_000):  # bounded: each page moves ``after`` forward
        query = {"limit": "1000", **({"after": after} if after else {})}
        data = call(args, "GET", f"{path}{sep}{urllib.parse.urlencode(query)}")
        items += data.get(key, [])
        after = data.get("next")
        if not after:
            break
    return items


def call(
    args: argparse.Namespace, method: str, path: str, body: Any = None, raw: bool = False
) -> Any:
    url = args.api.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    token = cli_auth.token_for(args)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            payload = resp.read()
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = payload.decode(errors="replace")
        if exc.code == 401 and not token and path != "/api/v1/auth/login":
            parsed = {
                "error": {
                    "message": "not logged in: run `cronmesh login`, or give --token / "
                    "CRONMESH_TOKEN"
                }
            }
        raise ApiError(exc.code, parsed) from None
    except urllib.error.URLError as exc:
        raise ApiError(0, {"error": {"message": f"cannot reach {url}: {exc.reason}"}}) from None
    if raw:
        return payload.decode(errors="replace")
    return json.loads(payload) if payload else None


def show(args: argparse.Namespace, data: Any) -> None:
    if args.output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(json.dumps(data, indent=2))


def proj(args: argparse.Namespace) -> str:
    return f"/api/v1/projects/{urllib.parse.quote(args.project)}"


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def load_documents(path: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    docs: list[dict[str, Any]] = []
    for doc in yamlio.load_all(text):  # only true/false are booleans (`on:` stays a key)
        if doc is None:
            continue
        if isinstance(doc, list):
            docs.extend(doc)
        else:
            docs.append(doc)
    return docs


def params(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"cronmesh: --param {item!r} must look like NAME=VALUE")
        out[key] = value
    return out


def apply_documents(args: argparse.Namespace, kind: str) -> Iterator[dict[str, Any]]:
    """PUT each document of ``args.file`` as a ``kind`` of the project; yields what was stored."""
    for doc in load_documents(args.file):
        name = doc.get("name") if isinstance(doc, dict) else None
        if not name:
            raise ApiError(400, {"error": {"message": f"each {kind} document needs a name"}})
        path = f"{proj(args)}/{kind}s/{urllib.parse.quote(str(name), safe='')}"
        yield call(args, "PUT", path, doc)


def schedules_text(doc: dict[str, Any]) -> str:
    return "; ".join(s.get("cron") or str(s.get("at")) for s in doc["schedules"]) or "-"


def cmd_job(args: argparse.Namespace) -> int:
    base = proj(args)
    if args.action == "apply":
        for job in apply_documents(args, "job"):
            print(f"job {args.project}/{job['name']} applied")
    elif args.action == "list":
        jobs = call_all(args, f"{base}/jobs", "jobs")
        if args.output == "table":
            table(
                [
                    [
                        j["name"],
                        "yes" if j["enabled"] else "no",
                        schedules_text(j),
                        ",".join(j["tags"]),
                    ]
                    for j in jobs
                ],
                ["NAME", "ENABLED", "SCHEDULES", "TAGS"],
            )
        else:
            show(args, jobs)
    elif args.action == "get":
        show(args, call(args, "GET", f"{base}/jobs/{args.name}"))
    elif args.action == "delete":
        call(args, "DELETE", f"{base}/jobs/{args.name}")
        print(f"job {args.project}/{args.name} deleted")
    elif args.action in ("enable", "disable"):
        call(args, "PATCH", f"{base}/jobs/{args.name}", {"enabled": args.action == "enable"})
        print(f"job {args.project}/{args.name} {args.action}d")
    elif args.action == "trigger":
        run = call(
            args, "POST", f"{base}/jobs/{args.name}/runs", {"parameters": params(args.param)}
        )
        if args.output == "table":
            print(run["id"])
        else:
            show(args, run)
    elif args.action == "ticks":
        show(args, call(args, "GET", f"{base}/jobs/{args.name}/ticks"))
    elif args.action == "backfill":
        body = {"from": args.start, "to": args.end}
        show(args, call(args, "POST", f"{base}/jobs/{args.name}/backfill", body))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    base = proj(args)
    if args.action == "list":
        query = {
            k: v
            for k, v in (("job", args.job), ("status", args.status), ("limit", args.limit))
            if v
        }
        runs = call(args, "GET", f"{base}/runs?{urllib.parse.urlencode(query)}")["runs"]
        if args.output == "table":
            table(
                [
                    [
                        r["id"],
                        r["job"],
                        r["status"],
                        str(r["attempt"]),
                        r["node"] or "-",
                        r["scheduled_at"] or "-",
                        r["source"],
                        "-" if r["exit_code"] is None else str(r["exit_code"]),
                    ]
                    for r in runs
                ],
                ["ID", "JOB", "STATUS", "ATTEMPT", "NODE", "SCHEDULED", "SOURCE", "EXIT"],
            )
        else:
            show(args, runs)
    elif args.action == "get":
        show(args, call(args, "GET", f"{base}/runs/{args.id}"))
    elif args.action == "logs":
        return cli_logs.print_logs(args, f"{base}/runs/{args.id}/logs")
    elif args.action in ("cancel", "abort"):
        call(args, "POST", f"{base}/runs/{args.id}/{args.action}")
        print(f"run {args.id}: {args.action} requested")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    try:
        data = call(args, "GET", "/status")
    except ApiError as exc:
        if exc.status != 503:
            raise
        data = exc.body
    if args.output == "table":
        print(f"node {data['node']['id']}  leader: {data['leader']}  queue: {data['queue_depth']}")
        held = data["node"].get("containment")
        if held:  # how this node contains its runs (D150)
            limits = ",".join(sorted(held.get("limits") or {})) or "none"
            print(f"runs contained by: {held['mode']} (kill: {held['kill']}, limits: {limits})")
        table(
            [
                [n["id"], "up" if n["up"] else "down", n.get("address", "-"), n.get("version", "-")]
                for n in data["nodes"]
            ],
            ["NODE", "STATE", "ADDRESS", "VERSION"],
        )
    else:
        show(args, data)
    return 0


# -- argument parsing ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cronmesh", description="A distributed job scheduler.")
    p.add_argument("--api", default=os.environ.get("CRONMESH_API", "http://127.0.0.1:8080"))
    p.add_argument("-p", "--project", default=os.environ.get("CRONMESH_PROJECT", "default"))
    p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    p.add_argument("--token", help="API token (else CRONMESH_TOKEN, else `cronmesh login`'s)")
    sub = p.add_subparsers(dest="command", required=True)
    cli_auth.add_commands(sub)

    n = sub.add_parser("node", help="run a cronmesh peer")
    n.add_argument("--config", help="YAML config file (also CRONMESH_CONFIG)")
    n.add_argument("--etcd", help="etcd endpoints, comma-separated (CRONMESH_ETCD)")
    n.add_argument("--listen", help="HOST:PORT of the HTTP API (CRONMESH_LISTEN)")
    n.add_argument("--advertise", help="HOST:PORT other nodes use to reach this one")
    n.add_argument("--node-id", help="node id (CRONMESH_NODE_ID, default: the host name)")
    n.add_argument("--prefix", help="etcd key prefix (default /cronmesh)")
    n.add_argument("--lease-ttl", type=int, help="lease TTL in seconds (default 5)")
    n.add_argument("--capacity", type=int, help="max concurrent runs on this node (default 16)")
    n.add_argument("--property", action="append", help="node property key=value (repeatable)")
    n.add_argument("--weight-budget", type=int, help="units of binding weight runs may hold")
    n.add_argument("--owner", help="who runs this node (shown in node list)")
    n.add_argument("--machine-id", type=int, help="snowflake machine id 0..1023 (default: auto)")
    n.add_argument("--handoff-delay", type=float, help="s before a non-preferred node takes a run")
    n.add_argument(
        "--materialize-ahead", type=float, help="s before its tick a run is written (default 1.5)"
    )
    n.add_argument("--data-dir", help="where logs and work files go (default .cronmesh)")
    n.add_argument(
        "--cgroups",
        choices=("auto", "off"),
        help="a cgroup per run where the machine allows it (auto, default) or process "
        "sessions only (off) (CRONMESH_CGROUPS)",
    )
    n.add_argument("--log-dir", help="run logs folder (default DATA_DIR/NODE/logs)")
    n.add_argument("--drain-timeout", type=float, help="seconds to let runs finish on SIGTERM")
    n.add_argument("--log-format", choices=["auto", "json", "console"])
    cli_auth.add_node_flags(n)
    cli_placement.add_node_actions(n)
    n.add_argument("--log-store", help="s3://bucket/prefix or a folder (default: --log-dir)")
    n.add_argument("--s3-endpoint", help="S3 endpoint URL (else AWS_ENDPOINT_URL)")
    n.add_argument("--s3-region", help="S3 region (else AWS_REGION)")
    n.add_argument("--job-env", action="append", help="NAME=VALUE every job gets (repeatable)")
    n.add_argument(
        "--run-as-users", help="users jobs may run as here, comma-separated (CRONMESH_RUN_AS_USERS)"
    )
    n.add_argument(
        "--run-as-default",
        help="user of jobs without run_as: dynamic (default: a uid per run) or a user name",
    )
    n.add_argument("--run-uid-range", help="uids of dynamic runs, FIRST-LAST (default 61184-65519)")
    n.add_argument(
        "--allow-root-jobs", action="store_true", help="a root node may run jobs as root"
    )
    n.add_argument(
        "--job-env-passthrough",
        help="node variables jobs get, comma-separated (CRONMESH_JOB_ENV_PASSTHROUGH)",
    )
    n.set_defaults(func=cmd_node)

    etcd_auth.add_command(sub)

    d = sub.add_parser("dev", help="run a local cluster: an embedded etcd and N nodes")
    d.add_argument("--nodes", type=int, default=3)
    d.add_argument("--port", type=int, default=8080, help="API port of the first node")
    d.add_argument("--etcd-port", type=int, default=2379)
    d.add_argument("--data", default=".cronmesh-dev", help="data folder (etcd data, logs)")
    d.set_defaults(func=lambda a: __import__("nodes.dev", fromlist=["main"]).main(a))

    j = sub.add_parser("job", help="manage jobs").add_subparsers(dest="action", required=True)
    ap = j.add_parser("apply", help="create or update jobs from a YAML/JSON file (- for stdin)")
    ap.add_argument("-f", "--file", required=True)
    j.add_parser("list")
    for action in ("get", "delete", "enable", "disable", "ticks"):
        j.add_parser(action).add_argument("name")
    tr = j.add_parser("trigger", help="run a job now")
    tr.add_argument("name")
    tr.add_argument("--param", action="append", help="NAME=VALUE (repeatable)")
    bf = j.add_parser("backfill", help="one run per tick in a past range")
    bf.add_argument("name")
    bf.add_argument("--from", dest="start", required=True, help="ISO 8601 start")
    bf.add_argument("--to", dest="end", required=True, help="ISO 8601 end")
    for parser in j.choices.values():
        parser.set_defaults(func=cmd_job)

    r = sub.add_parser("run", help="inspect and control runs").add_subparsers(
        dest="action", required=True
    )
    rl = r.add_parser("list")
    rl.add_argument("--job")
    rl.add_argument("--status")
    rl.add_argument("--limit", type=int)
    for action in ("get", "cancel", "abort"):
        r.add_parser(action).add_argument("id")
    lg = r.add_parser("logs")
    lg.add_argument("id")
    cli_logs.add_log_args(lg)
    for parser in r.choices.values():
        parser.set_defaults(func=cmd_run)

    cli_placement.add_group_commands(sub)
    s = sub.add_parser("status", help="cluster status as seen by a node")
    s.set_defaults(func=cmd_status)
    from nodes import cli_workflows  # imports this module: bound late

    cli_workflows.add_parsers(sub)
    add_ops_parsers(sub)
    from nodes import cli_secrets

    cli_secrets.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (
        args.command not in ("node", "dev")
        and args.output == "table"
        and args.command == "job"
        and args.action in ("get", "ticks", "backfill")
    ):
        args.output = "yaml"
    if args.command == "run" and args.action == "get" and args.output == "table":
        args.output = "yaml"
    if args.command in ("workflow", "secret") and args.action == "get" and args.output == "table":
        args.output = "yaml"
    try:
        return int(args.func(args) or 0)
    except ApiError as exc:
        err = exc.body.get("error", {}) if isinstance(exc.body, dict) else {}
        field = f" (field: {err['field']})" if err.get("field") else ""
        print(f"cronmesh: {exc}{field}", file=sys.stderr)
        return 1
    except (OSError, yaml.YAMLError) as exc:
        print(f"cronmesh: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Through the importable module, so CLI helper modules share its classes (ApiError).
    from nodes.cli import main as _main

    sys.exit(_main())
