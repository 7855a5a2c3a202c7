"""Which user a run's process runs as: the node's policy and the decision, pure (D142).

Two admins' decisions meet here. A cluster admin says which users each project may use
(``run_as_users`` on the project record); whoever runs a node says which users that node may run
jobs as (``run_as_users``, ``run_as_default``, ``allow_root_jobs`` in its configuration). A job's
``run_as`` must pass both; a job without one runs as the node's default user, which is by
default ``dynamic``: a uid of the run's own, picked from the node's ``run_uid_range`` (D205,
``cluster.runuids``), so runs of different projects never share a user.

A node that runs as root switches to the run's user; one that does not can only run jobs as
itself. A node running as root never runs a job as root unless ``allow_root_jobs`` says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from cluster.models import USER_NAME_PATTERN

ROOT = "root"
DYNAMIC = "dynamic"  # run_as_default: a uid per run (D205), not a user name


@dataclass(frozen=True, slots=True)
class NodeRunAs:
    """One node's run-as policy: its configuration plus who the node process is."""

    node: str
    is_root: bool  # the node process can switch users
    own_user: str  # the node process's user name
    users: frozenset[str] = frozenset()  # run_as_users: named users jobs may ask for
    default: str = DYNAMIC  # the user of jobs without run_as (when the node is root)
    allow_root: bool = False


@dataclass(frozen=True, slots=True)
class RunAsDecision:
    """``switch``: run the process as ``user`` (and ``group``); else run it as the node's own
    user. ``dynamic``: switch to a uid of the run's own (D205; ``user`` is None then).
    ``refusal``: this node cannot serve the run, and why."""

    user: str | None = None
    group: str | None = None
    switch: bool = False
    refusal: str | None = None
    dynamic: bool = False


def check_node_policy(policy: NodeRunAs) -> str | None:
    """What is wrong with a node's configuration (None: nothing)."""
    if policy.is_root and policy.default == ROOT and not policy.allow_root:
        return "run_as_default is root, which needs allow_root_jobs"
    if ROOT in policy.users and not policy.allow_root:
        return "run_as_users lists root, which needs allow_root_jobs"
    return None


def decide(user: str | None, group: str | None, policy: NodeRunAs) -> RunAsDecision:
    """As which user this node runs a run whose job asks for ``user``/``group`` (None: default)."""
    if not policy.is_root:
        if user is None or (user == policy.own_user and group is None):
            return RunAsDecision(policy.own_user)
        return RunAsDecision(
            refusal=f"{policy.node} runs as {policy.own_user!r} and cannot switch users"
        )
    if user is None and policy.default == DYNAMIC:
        return RunAsDecision(switch=True, dynamic=True)
    wanted = policy.default if user is None else user
    if wanted == ROOT:
        if not policy.allow_root:
            return RunAsDecision(refusal=f"{policy.node} does not run jobs as root")
        if group is None:
            return RunAsDecision(ROOT)  # the node's own user: nothing to switch
        return RunAsDecision(ROOT, group, switch=True)
    if (
        user is not None
        and (wanted == DYNAMIC or wanted != policy.default)
        and wanted not in policy.users
    ):
        return RunAsDecision(refusal=f"{policy.node} may not run jobs as {wanted!r}")
    return RunAsDecision(wanted, group, switch=True)


def servable(policy: NodeRunAs, exists: Callable[[str], bool]) -> list[str]:
    """The users this node advertises in its record, so placement can tell which nodes may take
    a run of a job with ``run_as`` (those that exist on this machine)."""
    if not policy.is_root:
        return [policy.own_user]
    names = set(policy.users) | ({policy.default} - {DYNAMIC})
    out = {name for name in names if name != ROOT and exists(name)}
    if policy.allow_root:
        out.add(ROOT)
    return sorted(out)


def project_refusal(project: str, user: str | None, allowed: Collection[str]) -> str | None:
    """Why ``project`` may not run jobs as ``user`` (None: it may, or the job has no run_as)."""
    if user is None or user in allowed:
        return None
    return (  # and how that changes (D509)
        f"project {project!r} may not run jobs as {user!r}: a cluster admin adds it to the"
        f' project\'s run_as_users (PUT /api/v1/projects/{project} {{"run_as_users": [...]}})'
    )


def parse_users(value: Iterable[object], field: str) -> list[str]:
    """A list of user names from a request or a record (raises ValueError naming ``field``)."""
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not re.fullmatch(USER_NAME_PATTERN, item):
            raise ValueError(f"{field}: {item!r} is not a user name")
        if item not in out:
            out.append(item)
    return out
