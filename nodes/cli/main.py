"""The ``cronmesh`` command: run a node (``node``), a local cluster (``dev``), and talk to the API.

API commands read ``--api`` (or ``CRONMESH_API``, default http://127.0.0.1:8080) and ``--project``
(or ``CRONMESH_PROJECT``, default ``default``).
"""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from nodes.cli import auth as cli_auth
from nodes.cli import etcd_auth, gitops, inspect, notify, secrets, workflows
from nodes.cli import groups as cli_placement
from nodes.cli import logs as cli_logs
from nodes.cli.client import ApiError
from nodes.cli.jobs import cmd_job, cmd_run, cmd_status
from nodes.cli.node import cmd_node

# -- HTTP client --------------------------------------------------------------------------------


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
    n.add_argument(
        "--capacity", type=int, help="max concurrent runs on this node (default 64 per CPU)"
    )
    n.add_argument(
        "--max-armed", type=int, help="max runs held armed ahead of their tick (default 512)"
    )
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
    d.add_argument(
        "--no-restart",
        dest="restart",
        action="store_false",
        help="do not restart a node that exits (default: restarted after a few seconds)",
    )
    d.set_defaults(func=lambda a: __import__("nodes.cli.dev", fromlist=["main"]).main(a))

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
    workflows.add_parsers(sub)
    inspect.add_parser(sub)
    gitops.add_parsers(sub)
    notify.add_parser(sub)
    notify.add_settings_parser(sub)
    secrets.add_parsers(sub)
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
