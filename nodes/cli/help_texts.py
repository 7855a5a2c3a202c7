"""What ``cronmesh --help`` and ``cronmesh node --help`` show: the version, and the flags of
``cronmesh node`` in groups by what they configure (D251).

The flags are declared where they always were (``nodes/cli/main.py``, ``auth.NODE_FLAGS``); this
module only sorts them into argparse groups by destination, so a new flag is one line where it is
declared plus its name here. A flag named in no group is shown under "other" (and
``tests/unit/test_cli_help.py`` fails on it).
"""

from __future__ import annotations

import argparse
from importlib import metadata

NODE_FLAG_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "cluster",
        "how this node finds the others: etcd, identity, leases",
        (
            "config",
            "etcd",
            "prefix",
            "node_id",
            "lease_ttl",
            "machine_id",
            "node_retention",
            "etcd_ca",
            "etcd_cert",
            "etcd_key",
            "etcd_user",
            "etcd_password_file",
        ),
    ),
    (
        "worker",
        "which runs this node takes and how it runs them",
        (
            "capacity",
            "max_armed",
            "property",
            "weight_budget",
            "owner",
            "handoff_delay",
            "materialize_ahead",
            "cgroups",
            "drain_timeout",
            "job_env",
            "job_env_passthrough",
        ),
    ),
    (
        "API",
        "the HTTP API and web UI this node serves, and its first admin",
        (
            "listen",
            "advertise",
            "public_url",
            "trusted_proxies",
            "admin_user",
            "admin_password_file",
            "admin_password_out",
            "admin_token_file",
            "metrics_token_file",
        ),
    ),
    (
        "storage",
        "where logs and work files go",
        ("data_dir", "log_dir", "log_store", "s3_endpoint", "s3_region", "log_format"),
    ),
    (
        "security",
        "node-to-node signing, secrets, and the users jobs run as",
        (
            "security_level",
            "peer_secret_file",
            "secrets_key_file",
            "smtp_url_file",
            "run_as_users",
            "run_as_default",
            "run_uid_range",
            "allow_root_jobs",
        ),
    ),
)


def version() -> str:
    """The installed package's version (``pyproject.toml``), or ``unknown`` from a bare tree."""
    try:
        return metadata.version("cronmesh")
    except metadata.PackageNotFoundError:
        return "unknown"


def group_node_flags(parser: argparse.ArgumentParser) -> None:
    """Move the flags of ``cronmesh node`` into the groups above (help layout only: parsing is
    unchanged). What no group names stays in an "other" group."""
    by_dest = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    placed: set[str] = set()
    for title, description, dests in NODE_FLAG_GROUPS:
        group = parser.add_argument_group(title, description)
        for dest in dests:
            action = by_dest.get(dest)
            if action is None:  # a flag of another branch not merged yet
                continue
            _move(parser, action, group)
            placed.add(dest)
    rest = [a for d, a in by_dest.items() if d not in placed and a.help != argparse.SUPPRESS]
    if rest:
        other = parser.add_argument_group("other")
        for action in rest:
            _move(parser, action, other)


def _move(parser: argparse.ArgumentParser, action: argparse.Action, to: object) -> None:
    for group in parser._action_groups:
        if action in group._group_actions:
            group._group_actions.remove(action)
    to._group_actions.append(action)  # type: ignore[attr-defined]
