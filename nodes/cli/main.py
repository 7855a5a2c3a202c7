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
from nodes.cli import budgets as cli_budgets
from nodes.cli import calendars as cli_calendars
from nodes.cli import (
    completion,
    etcd_auth,
    gitops,
    globalopts,
    help_texts,
    hooks,
    inspect,
    notify,
    secrets,
    workflows,
)
from nodes.cli import groups as cli_placement
from nodes.cli import logs as cli_logs
from nodes.cli import projects as cli_projects
from nodes.cli.client import ApiError
from nodes.cli.jobs import add_slot_paging, cmd_job, cmd_run, cmd_status
from nodes.cli.node import cmd_node

# -- HTTP client --------------------------------------------------------------------------------


# -- argument parsing ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cronmesh",
        description="A distributed job scheduler. `cronmesh node` runs a peer, `cronmesh dev` a "
        "local cluster; the other commands talk to a node's HTTP API.",
        epilog="Shell completion: `source <(cronmesh completion bash)` (or zsh).",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {help_texts.version()}")
    p.add_argument(
        "--api",
        default=os.environ.get("CRONMESH_API", "http://127.0.0.1:8080"),
        help="URL of a node's API (CRONMESH_API, default http://127.0.0.1:8080)",
    )
    p.add_argument(
        "-p",
        "--project",
        default=os.environ.get("CRONMESH_PROJECT", "default"),
        help="project the command acts in (CRONMESH_PROJECT, default: default)",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=["table", "json", "yaml"],
        default="table",
        help="table (default): lists as tables, a document as YAML; json or yaml: the API's "
        "document",
    )
    p.add_argument("--token", help="API token (else CRONMESH_TOKEN, else `cronmesh login`'s)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_auth.add_commands(sub)

    n = sub.add_parser(
        "node",
        help="run a cronmesh peer (admin actions on nodes: `cronmesh nodes`)",
        usage="%(prog)s [--config FILE] [--etcd URLS] [--listen HOST:PORT] [--node-id ID] "
        "[FLAG ...]",
        description="Run a cronmesh peer until SIGTERM/SIGINT. Every flag also has a CRONMESH_* "
        "variable and a key in the --config file. To list, drain or forget nodes, use "
        "`cronmesh nodes`.",
    )
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
    n.add_argument(
        "--data-dir",
        help="where logs and work files go (default /var/lib/cronmesh as root, else "
        "~/.local/state/cronmesh)",
    )
    n.add_argument(
        "--cgroups",
        choices=("auto", "off"),
        help="a cgroup per run where the machine allows it (auto, default) or process "
        "sessions only (off) (CRONMESH_CGROUPS)",
    )
    n.add_argument("--log-dir", help="run logs folder (default DATA_DIR/NODE/logs)")
    n.add_argument("--drain-timeout", type=float, help="seconds to let runs finish on SIGTERM")
    n.add_argument(
        "--node-retention",
        type=float,
        help="s a node stays listed once down, then forgotten (default 86400; 0: forever)",
    )
    n.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        help="daemon log lines: console on a terminal, JSON otherwise (auto, default)",
    )
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
    help_texts.group_node_flags(n)
    cli_placement.add_nodes_command(sub)

    etcd_auth.add_command(sub)

    d = sub.add_parser("dev", help="run a local cluster: an embedded etcd and N nodes")
    d.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    d.add_argument(
        "--port",
        type=int,
        default=8080,
        help="API port of the first node (default 8080; the others take the next ones)",
    )
    d.add_argument(
        "--etcd-port",
        type=int,
        default=2379,
        help="client port of the etcd (default 2379; its peer port is the next one)",
    )
    d.add_argument(
        "--data",
        default=".cronmesh-dev",
        help="data folder (etcd data, logs; default .cronmesh-dev)",
    )
    d.add_argument(
        "--no-restart",
        dest="restart",
        action="store_false",
        help="do not restart a node that exits (default: restarted after a few seconds)",
    )
    d.set_defaults(func=lambda a: __import__("nodes.cli.dev", fromlist=["main"]).main(a))

    j = sub.add_parser("job", help="manage jobs").add_subparsers(dest="action", required=True)
    ap = j.add_parser("apply", help="create or update jobs from a YAML/JSON file (- for stdin)")
    ap.add_argument("-f", "--file", required=True, help="YAML/JSON file, several documents ok")
    j.add_parser("list", help="the project's jobs (a table; -o yaml|json for documents)")
    for action, helptext in (
        ("get", "one job's document (YAML unless -o json)"),
        ("delete", "delete a job (its runs stay until archived)"),
        ("enable", "let a job's schedules fire again"),
        ("disable", "stop a job's schedules firing (manual triggers still work)"),
        ("ticks", "each recent tick's fate and the next ten fire times"),
    ):
        j.add_parser(action, help=helptext).add_argument("name", help="job name")
    slots = j.add_parser(
        "slots", help="recent slots' outcomes; a waiting slot names the upstream slots it waits for"
    )
    slots.add_argument("name", help="job name")
    add_slot_paging(slots)
    tr = j.add_parser("trigger", help="run a job now (prints the run id)")
    tr.add_argument("name", help="job name")
    tr.add_argument(
        "--param", action="append", help="NAME=VALUE, a parameter of this run (repeatable)"
    )
    bf = j.add_parser("backfill", help="one run per tick in a past range")
    bf.add_argument("name", help="job name")
    bf.add_argument("--from", dest="start", required=True, help="ISO 8601 start")
    bf.add_argument("--to", dest="end", required=True, help="ISO 8601 end")
    for parser in j.choices.values():
        parser.set_defaults(func=cmd_job)

    r = sub.add_parser("run", help="inspect and control runs").add_subparsers(
        dest="action", required=True
    )
    rl = r.add_parser("list", help="runs, newest first (a table; -o yaml|json for documents)")
    rl.add_argument("--job", help="only this job's runs")
    rl.add_argument(
        "--status",
        help="only runs in this status: pending, running, succeeded, failed, timed_out, "
        "cancelled, lost, skipped; or waiting (pending, held back by a budget: says why)",
    )
    rl.add_argument("--limit", type=int, help="at most this many (default 50)")
    for action, helptext in (
        ("get", "one run's document, with its attempts (YAML unless -o json)"),
        (
            "cancel",
            "stop a run gently: SIGTERM, SIGKILL after the job's kill_grace (a pending run "
            "is cancelled at once); status cancelled",
        ),
        ("abort", "stop a run now: SIGKILL its process tree, no grace; status cancelled"),
        ("rerun", "run a finished slot's run again at its slot (releases what waits on it)"),
    ):
        r.add_parser(action, help=helptext).add_argument("id", help="run id")
    lg = r.add_parser("logs", help="a run's output (stdout and stderr)")
    lg.add_argument("id", help="run id")
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
    cli_calendars.add_parsers(sub)  # calendars, blackouts, freeze, plan (issue 21)
    hooks.add_parsers(sub)
    cli_budgets.add_parsers(sub)
    cli_projects.add_parsers(sub)
    completion.add_parser(sub, p)
    globalopts.add_after_commands(p, hidden=(" node",))  # `run list -o json` (D288)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ApiError as exc:
        print(exc.describe(), file=sys.stderr)
        return 1
    except BrokenPipeError:  # `cronmesh plan | head`: the reader is gone (the API's are URLError)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 141  # as a shell reports a command killed by SIGPIPE
    except (OSError, yaml.YAMLError) as exc:
        print(f"cronmesh: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
