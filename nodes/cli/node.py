"""``cronmesh node``: run a peer (flags over the config file and environment), or act on nodes."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from cluster.errors import CronmeshError
from nodes.cli import auth as cli_auth
from nodes.cli import groups as cli_placement


def setup_logging(fmt: str = "auto", level: int = logging.INFO) -> None:
    from nodes.runtime.logsetup import configure

    configure(fmt, level)


def cmd_node(args: argparse.Namespace) -> int:
    import uvloop

    if args.node_action:  # the old spelling of `cronmesh nodes ACTION` (D251)
        print(
            f"cronmesh: `cronmesh node {args.node_action}` is deprecated and goes in the next "
            f"release: use `cronmesh nodes {args.node_action}`",
            file=sys.stderr,
        )
        return cli_placement.cmd_node_admin(args)

    from nodes.config_sources import SECRET_VARIABLES, load_config
    from nodes.daemon.node import Node
    from nodes.executor import jobenv, workdir

    flags = {
        "node_id": args.node_id,
        "etcd": args.etcd,
        "listen": args.listen,
        "advertise": args.advertise,
        "prefix": args.prefix,
        "lease_ttl": args.lease_ttl,
        "capacity": args.capacity,
        "max_armed": args.max_armed,
        "weight_budget": args.weight_budget,
        "owner": args.owner,
        "machine_id": args.machine_id,
        "handoff_delay": args.handoff_delay,
        "materialize_ahead": args.materialize_ahead,
        "properties": args.property or None,
        "data_dir": args.data_dir,
        "log_dir": args.log_dir,
        "drain_timeout": args.drain_timeout,
        "node_retention": args.node_retention,
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
    from nodes.runtime import gctune

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
            loop.add_signal_handler(sig, node.on_signal)
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
